"""The Speechmatics RT adapter in-process: the messages a client gets, in order, for real speech.

Real Silero VAD on Piper speech, fake ASR and the fake speaker model (``tests/rt_driver.py``).
The real clients run against a served app in ``tests/serve/test_speechmatics_clients.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serve_app.engine.audio.codecs import MULAW
from serve_app.engine.audio.vad import SileroVAD
from tests.rt_driver import RTDriver, wav_file

RATE = 16_000


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture(scope="module")
def two_utterances(make_utterance: Any) -> bytes:
    first = make_utterance("The weather is lovely today.", rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0)
    second = make_utterance("Shall we go for a walk?", rate=RATE, lead_silence_s=0.0, trail_silence_s=1.0)
    return first + second


async def test_raw_audio_gets_one_audio_added_per_frame_and_finals_in_order(
    vad: SileroVAD, two_utterances: bytes
) -> None:
    # One transcript: the fake also answers early (speculative) decodes, so a list could rotate.
    driver = RTDriver(vad, ["words of an utterance"])
    try:
        await driver.start()
        assert driver.messages[0]["message"] == "RecognitionStarted"
        frames = await driver.stream(two_utterances)
        await driver.finish(frames)
        assert [m["seq_no"] for m in driver.of("AudioAdded")] == list(range(1, frames + 1))
        assert driver.messages[-1] == {"message": "EndOfTranscript"}
        assert not driver.of("Error")
        words = driver.final_words()
        assert " ".join(w["alternatives"][0]["content"] for w in words) == " ".join(
            ["words of an utterance"] * 2
        )
        starts = [w["start_time"] for w in words]
        assert starts == sorted(starts)
        # The fake ASR spreads words over the decoded audio, which starts 200 ms before the speech.
        assert 0.05 < starts[0] < 0.3 and words[-1]["end_time"] <= len(two_utterances) / 2 / RATE
        assert {w["alternatives"][0]["speaker"] for w in words} == {"UU"}  # diarization off
        assert all(m["format"] == "2.9" and m["metadata"]["transcript"] for m in driver.of("AddTranscript"))
        assert not driver.of("AddPartialTranscript")  # enable_partials defaults to false
    finally:
        await driver.close()


async def test_a_wav_file_in_pieces_is_read_at_its_own_rate(vad: SileroVAD, make_utterance: Any) -> None:
    audio = make_utterance("Good morning everyone.", rate=22_050, lead_silence_s=0.3, trail_silence_s=1.0)
    driver = RTDriver(vad, ["good morning everyone"])
    try:
        await driver.start({"type": "file"}, diarization="speaker")
        frames = await driver.stream(wav_file(audio, 22_050), chunk=1000)
        await driver.finish(frames)
        assert len(driver.of("AudioAdded")) == frames and not driver.of("Error")
        words = driver.final_words()
        assert [w["alternatives"][0]["content"] for w in words] == ["good", "morning", "everyone"]
        assert 0.05 < words[0]["start_time"] < 0.3  # times in the file's own seconds
        assert {w["alternatives"][0]["speaker"] for w in words} == {"S1"}
    finally:
        await driver.close()


async def test_mulaw_at_8_khz(vad: SileroVAD, make_utterance: Any) -> None:
    pcm = np.frombuffer(make_utterance("Hello there.", rate=8000, lead_silence_s=0.3), "<i2")
    # Encode by nearest table entry: the decoder's own table, so the round trip is exact.
    order = np.argsort(MULAW)
    codes = order[np.clip(np.searchsorted(MULAW[order], pcm), 0, 255)].astype(np.uint8)
    driver = RTDriver(vad, ["hello there"])
    try:
        await driver.start({"type": "raw", "encoding": "mulaw", "sample_rate": 8000})
        frames = await driver.stream(codes.tobytes(), chunk=800)
        await driver.finish(frames)
        assert [w["alternatives"][0]["content"] for w in driver.final_words()] == ["hello", "there"]
    finally:
        await driver.close()


async def test_partials_come_before_finals_when_streamed_in_real_time(
    vad: SileroVAD, make_utterance: Any
) -> None:
    audio = make_utterance(
        "This sentence goes on for quite a while so that partials appear.", rate=RATE, lead_silence_s=0.3
    )
    driver = RTDriver(vad, ["this sentence goes on for quite a while"], partial_step_ms=200)
    try:
        await driver.start(enable_partials=True)
        frames = await driver.stream(audio, chunk=3200, realtime_rate=RATE)
        await driver.finish(frames)
        kinds = [
            m["message"] for m in driver.messages if m["message"] in ("AddPartialTranscript", "AddTranscript")
        ]
        assert "AddPartialTranscript" in kinds
        assert kinds.index("AddPartialTranscript") < kinds.index("AddTranscript")
    finally:
        await driver.close()


async def test_force_end_of_utterance_and_the_silence_trigger_send_end_of_utterance(
    vad: SileroVAD, make_utterance: Any
) -> None:
    audio = make_utterance("Please stop here.", rate=RATE, lead_silence_s=0.3, trail_silence_s=0.0)
    driver = RTDriver(vad, ["please stop here"])
    try:
        await driver.start(conversation_config={"end_of_utterance_silence_trigger": 0.6})
        frames = await driver.stream(audio)
        await driver.send({"message": "ForceEndOfUtterance"})
        await driver.wait_for(lambda: driver.of("EndOfUtterance"))
        assert driver.of("EndOfUtterance")[0]["forced"] is True
        frames += await driver.stream(make_utterance("And again.", rate=RATE, trail_silence_s=1.0))
        await driver.finish(frames)
        assert len(driver.of("EndOfUtterance")) == 2
        assert "forced" not in driver.of("EndOfUtterance")[1]
    finally:
        await driver.close()


async def test_get_speakers_and_max_speakers(vad: SileroVAD, two_utterances: bytes) -> None:
    driver = RTDriver(vad, ["one", "two"])
    try:
        await driver.start(diarization="speaker", speaker_diarization_config={"max_speakers": 2})
        frames = await driver.stream(two_utterances)
        await driver.send({"message": "GetSpeakers", "final": True})
        await driver.finish(frames)
        [result] = driver.of("SpeakersResult")
        labels = {s["label"] for s in result["speakers"]}
        assert labels and labels <= {"S1", "S2"}
        assert driver.messages[-1]["message"] == "EndOfTranscript"
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("messages", "error_type"),
    [
        ([b"\x00\x01" * 100], "protocol_error"),  # audio before StartRecognition
        (["{not json"], "invalid_message"),
        ([{"message": "Hello"}], "invalid_message"),
        ([{"message": "EndOfStream", "last_seq_no": 0}], "protocol_error"),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "raw", "encoding": "opus", "sample_rate": 1},
                    "transcription_config": {"language": "en"},
                }
            ],
            "invalid_audio_type",
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "file"},
                    "transcription_config": {"language": "en", "diarization": "channel"},
                }
            ],
            "invalid_config",
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "file"},
                    "transcription_config": {"language": "en", "max_delay": 0.1},
                }
            ],
            "invalid_config",
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "file"},
                    "transcription_config": {"language": "en"},
                },
                b"ID3\x04" + bytes(100),
            ],
            None,
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "file"},
                    "transcription_config": {"language": "en"},
                },
                b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(16),
            ],
            "invalid_audio_type",
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
                    "transcription_config": {"language": "en"},
                },
                b"\x00" * 3,
            ],
            "invalid_audio_type",
        ),
        (
            [
                {
                    "message": "StartRecognition",
                    "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
                    "transcription_config": {"language": "en"},
                },
                {"message": "EndOfStream", "last_seq_no": 5},
            ],
            "protocol_error",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_nothing_else_breaks(
    vad: SileroVAD, messages: list[Any], error_type: str | None
) -> None:
    driver = RTDriver(vad)
    try:
        for message in messages:
            await driver.send(message)
        if error_type is None:  # a non-WAV file: judged when complete, at EndOfStream
            await driver.send({"message": "EndOfStream", "last_seq_no": 1})
            await driver.wait_for(lambda: driver.of("Error"))
            error_type = "invalid_audio_type"
        await driver.wait_for(lambda: driver.of("Error"))
        [error] = driver.of("Error")
        assert error["type"] == error_type and error["reason"]
        assert driver.closed_after is not None  # the session ends, the server goes on
        await driver.send({"message": "EndOfStream", "last_seq_no": 0})  # ignored after the end
        assert len(driver.of("Error")) == 1
    finally:
        await driver.close()


async def test_unknown_config_keys_are_ignored_and_the_path_language_must_agree(vad: SileroVAD) -> None:
    driver = RTDriver(vad)
    try:
        await driver.start(operating_point="enhanced", streaming_mode=True, additional_vocab=["voxray"])
        assert driver.messages[0]["message"] == "RecognitionStarted"
    finally:
        await driver.close()
    driver = RTDriver(vad, path_language="de")
    try:
        await driver.start()
        assert driver.of("Error")[0]["type"] == "invalid_language"
    finally:
        await driver.close()


async def test_diarization_without_a_speaker_model_warns_and_labels_uu(
    vad: SileroVAD, two_utterances: bytes
) -> None:
    driver = RTDriver(vad, ["one two"], speaker=False)
    try:
        await driver.start(diarization="speaker")
        assert driver.of("Warning")[0]["type"] == "speaker_id"
        frames = await driver.stream(two_utterances)
        await driver.finish(frames)
        assert {w["alternatives"][0]["speaker"] for w in driver.final_words()} == {"UU"}
    finally:
        await driver.close()
