"""Riva speech recognition in-process: real Silero VAD on Piper speech, fake ASR and speaker models.

The session is driven as ``GrpcStream`` drives it (``handle_request`` per message, ``finish``
at the half-close); one test runs it inside a real ``GrpcStream``. Served over real gRPC in
``tests/serve/test_riva_asr_grpc.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import Mock

import grpc
import numpy as np
import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeSpeaker, FakeTTS
from deployments.types import SpeakerEmbeddings
from serve_app.engine.audio.codecs import ALAW_ENCODE, MULAW_ENCODE, encode_g711
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.grpc_api.proto import riva_asr_pb2 as asr
from serve_app.protocols.grpc_api.proto import riva_audio_pb2, riva_common_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort
from serve_app.protocols.grpc_api.stream import GrpcStream
from serve_app.protocols.riva.recognition import RivaStreamingRecognition, recognition_config
from tests.rt_driver import rt_config, wav_file

E = riva_audio_pb2.AudioEncoding
RATE = 16_000
WAIT_S = 30.0


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture(scope="module")
def two_utterances(make_utterance: Any) -> bytes:
    """Two sentences at 16 kHz, each followed by a second of silence."""
    return b"".join(
        make_utterance(text, rate=RATE, lead_silence_s=lead, trail_silence_s=1.0)
        for text, lead in (("Could you read me the news?", 0.3), ("Only the headlines, please.", 0.0))
    )


class RecordingASR(FakeASR):
    """The fake ASR, remembering the language of each call."""

    languages: list[str | None]

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: Any = None
    ) -> Any:
        self.languages = [*getattr(self, "languages", []), language]
        return await super().transcribe(pcm16, sample_rate, language, options)


def models(transcripts: list[str], speaker: bool = True, **asr: Any) -> ModelClients:
    return ModelClients(
        RecordingASR(None, {"transcripts": transcripts, **asr}),
        FakeLLM(None, {}),
        FakeTTS(None, {}),
        FakeSpeaker(None, {}) if speaker else None,
    )


def recognition(**fields: Any) -> asr.RecognitionConfig:
    """A RecognitionConfig: LINEAR_PCM at 16 kHz, en-US, with ``fields`` changed."""
    base: dict[str, Any] = {"encoding": E.LINEAR_PCM, "sample_rate_hertz": RATE, "language_code": "en-US"}
    return asr.RecognitionConfig(**{**base, **fields})


def config_request(interim: bool = False, **fields: Any) -> asr.StreamingRecognizeRequest:
    streaming = asr.StreamingRecognitionConfig(config=recognition(**fields), interim_results=interim)
    return asr.StreamingRecognizeRequest(streaming_config=streaming)


class Driver:
    """One StreamingRecognize session with the fake models; ``responses`` as a client reads them."""

    def __init__(
        self,
        vad: SileroVAD,
        transcripts: list[str] | None = None,
        speaker: bool = True,
        early_finals: bool = True,
        **asr_opts: Any,
    ) -> None:
        self.responses: list[asr.StreamingRecognizeResponse] = []
        self.models = models(transcripts or ["words of an utterance"], speaker, **asr_opts)
        config = rt_config(early_finals=early_finals)
        self.session = RivaStreamingRecognition(config, self.models, vad.stream(), self._emit)

    async def _emit(self, response: asr.StreamingRecognizeResponse) -> None:
        self.responses.append(response)

    async def send(self, request: asr.StreamingRecognizeRequest) -> None:
        await self.session.handle_request(request)

    async def audio(self, data: bytes, chunk: int = 3200, realtime_rate: int | None = None) -> None:
        for at in range(0, len(data), chunk):
            await self.send(asr.StreamingRecognizeRequest(audio_content=data[at : at + chunk]))
            if realtime_rate:
                await asyncio.sleep(chunk / 2 / realtime_rate)

    async def finish(self) -> None:
        await asyncio.wait_for(self.session.finish(), WAIT_S)

    @property
    def results(self) -> list[asr.StreamingRecognitionResult]:
        return [result for response in self.responses for result in response.results]

    @property
    def finals(self) -> list[asr.StreamingRecognitionResult]:
        return [r for r in self.results if r.is_final]

    @property
    def words(self) -> list[asr.WordInfo]:
        return [w for r in self.finals for w in r.alternatives[0].words]

    def text(self) -> str:
        return "".join(r.alternatives[0].transcript for r in self.finals)

    async def close(self) -> None:
        await self.session.close()


async def run(driver: Driver, request: asr.StreamingRecognizeRequest, audio: bytes, **kwargs: Any) -> Driver:
    try:
        await driver.send(request)
        await driver.audio(audio, **kwargs)
        await driver.finish()
    finally:
        await driver.close()
    return driver


def abort_of(excinfo: pytest.ExceptionInfo[GrpcAbort]) -> tuple[grpc.StatusCode, str]:
    return excinfo.value.code, excinfo.value.details


async def test_audio_before_the_config_is_refused(vad: SileroVAD) -> None:
    driver = Driver(vad)
    with pytest.raises(GrpcAbort) as refused:
        await driver.send(asr.StreamingRecognizeRequest(audio_content=bytes(3200)))
    code, details = abort_of(refused)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "send streaming_config first" in details
    with pytest.raises(GrpcAbort) as empty:  # a stream half-closed with nothing in it
        await Driver(vad).session.finish()
    assert (
        abort_of(empty)[0] == grpc.StatusCode.INVALID_ARGUMENT
        and "streaming_config first" in abort_of(empty)[1]
    )


async def test_a_second_config_is_refused(vad: SileroVAD) -> None:
    driver = Driver(vad)
    await driver.send(config_request())
    with pytest.raises(GrpcAbort) as refused:
        await driver.send(config_request())
    assert (
        abort_of(refused)[0] == grpc.StatusCode.INVALID_ARGUMENT
        and "already received" in abort_of(refused)[1]
    )
    await driver.close()


async def test_finals_per_utterance_without_interim_results(vad: SileroVAD, two_utterances: bytes) -> None:
    request = config_request()
    request.id.CopyFrom(riva_common_pb2.RequestId(value="req-7"))
    driver = await run(Driver(vad), request, two_utterances)
    assert driver.results and all(r.is_final for r in driver.results)  # interim_results off
    assert driver.text() == "words of an utterance " * 2  # finals end with a space, as Riva's
    for result in driver.finals:
        assert result.channel_tag == 1 and 0 < result.alternatives[0].confidence <= 1
        assert len(result.alternatives) == 1 and not result.alternatives[0].words  # no word offsets asked
    processed = [r.audio_processed for r in driver.finals]
    assert processed == sorted(processed) and processed[-1] == pytest.approx(
        len(two_utterances) / 2 / RATE, abs=0.1
    )
    assert {r.id.value for r in driver.responses} == {"req-7"}


async def test_interim_results_come_before_the_final_with_a_stability(
    vad: SileroVAD, make_utterance: Any
) -> None:
    audio = make_utterance(
        "This sentence goes on for quite a while so that partials appear.", rate=RATE, lead_silence_s=0.3
    )
    driver = await run(
        Driver(vad, ["this sentence goes on for quite a while"]),
        config_request(interim=True),
        audio,
        realtime_rate=RATE,
    )
    kinds = [r.is_final for r in driver.results]
    assert False in kinds and kinds.index(False) < kinds.index(True)
    interim = [r for r in driver.results if not r.is_final]
    assert all(0 < r.stability <= 1 and r.alternatives[0].transcript for r in interim)
    assert all(not r.alternatives[0].transcript.endswith(" ") for r in interim)


async def test_word_time_offsets_in_milliseconds(vad: SileroVAD, two_utterances: bytes) -> None:
    driver = await run(Driver(vad), config_request(enable_word_time_offsets=True), two_utterances)
    words = driver.words
    assert [w.word for w in words] == ["words", "of", "an", "utterance", "words", "of", "an", "utterance"]
    starts = [w.start_time for w in words]
    assert starts == sorted(starts) and all(w.end_time >= w.start_time for w in words)
    assert 50 < starts[0] < 300  # the fake spreads words over the decoded audio, 200 ms before the speech
    assert words[-1].end_time <= len(two_utterances) / 2 / RATE * 1000
    assert {w.speaker_tag for w in words} == {0}  # diarization off


class LoudnessSpeaker(FakeSpeaker):
    """Tells "speakers" apart by loudness: a loud window is one voice, a quiet one another."""

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        windows = await super().embed(pcm16, sample_rate)
        audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
        vectors = []
        for start, end in zip(windows.starts_s, windows.ends_s, strict=True):
            part = audio[round(start * sample_rate) : round(end * sample_rate)]
            loud = np.sqrt(np.mean(part**2)) > 1500
            vectors.append([1.0, 0.0] if loud else [0.0, 1.0])
        return SpeakerEmbeddings(starts_s=windows.starts_s, ends_s=windows.ends_s, vectors=vectors)


async def test_speaker_tags_on_every_word(vad: SileroVAD, make_utterance: Any) -> None:
    loud = make_utterance("The weather is lovely today.", rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0)
    quiet = (np.frombuffer(make_utterance("Shall we go for a walk?", rate=RATE), "<i2") // 6).astype("<i2")
    audio = loud + quiet.tobytes() + loud
    diarized = {"enable_speaker_diarization": True, "max_speaker_count": 3}
    driver = Driver(vad)
    driver.models = dataclasses.replace(driver.models, speaker=LoudnessSpeaker(None, {}))
    driver.session = RivaStreamingRecognition(rt_config(), driver.models, vad.stream(), driver._emit)
    await run(driver, config_request(diarization_config=diarized), audio)
    tags = [w.speaker_tag for w in driver.words]
    assert len(tags) == 12 and all(tag >= 1 for tag in tags)  # offsets come with diarization
    assert tags == [1] * 4 + [2] * 4 + [1] * 4
    one = {"enable_speaker_diarization": True, "max_speaker_count": 1}
    driver = await run(Driver(vad), config_request(diarization_config=one), audio)
    assert {w.speaker_tag for w in driver.words} == {1}


async def test_punctuation_only_when_asked(vad: SileroVAD, make_utterance: Any) -> None:
    audio = make_utterance("Hello there, general Kenobi.", rate=RATE, lead_silence_s=0.3)
    said = ["Hello there, general Kenobi."]
    # Finals at the utterance's end only: the fake says its whole sentence for any window.
    plain = await run(
        Driver(vad, said, early_finals=False), config_request(enable_word_time_offsets=True), audio
    )
    assert plain.text() == "Hello there general Kenobi "
    assert [w.word for w in plain.words] == ["Hello", "there", "general", "Kenobi"]
    punctuated = await run(
        Driver(vad, said, early_finals=False),
        config_request(enable_automatic_punctuation=True, enable_word_time_offsets=True),
        audio,
    )
    assert punctuated.text() == "Hello there, general Kenobi. "
    assert [w.word for w in punctuated.words] == ["Hello", "there,", "general", "Kenobi."]


async def test_a_wav_header_is_trusted_over_the_config(vad: SileroVAD, make_utterance: Any) -> None:
    audio = make_utterance("Good morning everyone.", rate=22_050, lead_silence_s=0.3, trail_silence_s=1.0)
    request = config_request(encoding=E.MULAW, sample_rate_hertz=8000, enable_word_time_offsets=True)
    driver = await run(Driver(vad, ["good morning everyone"]), request, wav_file(audio, 22_050), chunk=1000)
    assert [w.word for w in driver.words] == ["good", "morning", "everyone"]
    assert 50 < driver.words[0].start_time < 300  # in the file's own time


async def test_transcribe_file_style_config_with_no_encoding_rate_or_language(
    vad: SileroVAD, make_utterance: Any
) -> None:
    audio = make_utterance("Good morning everyone.", rate=44_100, lead_silence_s=0.3, trail_silence_s=1.0)
    driver = Driver(vad, ["good morning everyone"])
    request = asr.StreamingRecognizeRequest(
        streaming_config=asr.StreamingRecognitionConfig(
            config=asr.RecognitionConfig(max_alternatives=1, verbatim_transcripts=True), interim_results=True
        )
    )
    await run(driver, request, wav_file(audio, 44_100), chunk=3200)
    assert driver.text() == "good morning everyone "
    assert set(driver.models.asr.languages) == {"en"}  # empty language_code: the server's default


@pytest.mark.parametrize(
    ("encoding", "table"), [(E.MULAW, MULAW_ENCODE), (E.ALAW, ALAW_ENCODE)], ids=["mulaw", "alaw"]
)
async def test_g711_at_8_khz(vad: SileroVAD, make_utterance: Any, encoding: int, table: np.ndarray) -> None:
    codes = encode_g711(make_utterance("Hello there.", rate=8000, lead_silence_s=0.3), table)
    request = config_request(encoding=encoding, sample_rate_hertz=8000, language_code="de-DE")
    driver = await run(Driver(vad, ["hallo du"]), request, codes, chunk=800)
    assert driver.text() == "hallo du "
    assert set(driver.models.asr.languages) == {"de"}


async def test_the_half_close_flushes_the_open_utterance(vad: SileroVAD, make_utterance: Any) -> None:
    audio = make_utterance("Please stop here.", rate=RATE, lead_silence_s=0.3, trail_silence_s=0.0)
    driver = Driver(vad, ["please stop here"])
    await driver.send(config_request())
    await driver.audio(audio)
    await asyncio.sleep(0.2)
    assert not driver.finals  # no silence yet: the utterance is open
    await driver.finish()
    assert driver.text() == "please stop here "
    await driver.close()


@pytest.mark.parametrize(
    ("fields", "code", "needle"),
    [
        ({"encoding": 9}, "INVALID_ARGUMENT", "encoding 9 is not supported"),
        ({"sample_rate_hertz": 10_000_000}, "INVALID_ARGUMENT", "sample_rate_hertz"),
        ({"language_code": "English please"}, "INVALID_ARGUMENT", "BCP-47"),
        ({"model": "conformer-en-US-asr-streaming"}, "INVALID_ARGUMENT", "not served here"),
        ({"max_alternatives": -1}, "INVALID_ARGUMENT", "max_alternatives"),
        ({"diarization_config": {"max_speaker_count": -2}}, "INVALID_ARGUMENT", "max_speaker_count"),
        (
            {"audio_channel_count": 2, "enable_separate_recognition_per_channel": True},
            "INVALID_ARGUMENT",
            "separate_recognition_per_channel",
        ),
    ],
)
async def test_configs_voxray_cannot_honour(
    vad: SileroVAD, fields: dict[str, Any], code: str, needle: str
) -> None:
    with pytest.raises(GrpcAbort) as refused:
        await Driver(vad).send(config_request(**fields))
    assert refused.value.code == grpc.StatusCode[code] and needle in refused.value.details


async def test_diarization_without_a_speaker_model_is_a_failed_precondition(vad: SileroVAD) -> None:
    with pytest.raises(GrpcAbort) as refused:
        await Driver(vad, speaker=False).send(
            config_request(diarization_config={"enable_speaker_diarization": True})
        )
    assert (
        refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and "speaker model" in refused.value.details
    )


async def test_bad_audio_is_refused(vad: SileroVAD) -> None:
    driver = Driver(vad)
    await driver.send(config_request())
    with pytest.raises(GrpcAbort) as huge:
        await driver.send(asr.StreamingRecognizeRequest(audio_content=bytes((1 << 20) + 2)))
    assert huge.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(1 << 20) in huge.value.details
    raw = Driver(vad)
    await raw.send(config_request(sample_rate_hertz=0))
    with pytest.raises(GrpcAbort) as no_rate:
        await raw.send(asr.StreamingRecognizeRequest(audio_content=bytes(3200)))
    assert (
        no_rate.value.code == grpc.StatusCode.INVALID_ARGUMENT
        and "sample_rate_hertz" in no_rate.value.details
    )
    await driver.close()
    await raw.close()


async def test_an_asr_failure_ends_the_call_with_internal(vad: SileroVAD, two_utterances: bytes) -> None:
    driver = Driver(vad, fail=True)
    with pytest.raises(GrpcAbort) as failed:
        await run(driver, config_request(), two_utterances)
    assert failed.value.code == grpc.StatusCode.INTERNAL and "ASR failed" in failed.value.details


async def requests(*items: asr.StreamingRecognizeRequest, audio: bytes = b"") -> AsyncIterator[Any]:
    for item in items:
        yield item
    for at in range(0, len(audio), 3200):
        yield asr.StreamingRecognizeRequest(audio_content=audio[at : at + 3200])


async def test_inside_a_grpc_stream_results_then_ok_or_a_status(
    vad: SileroVAD, two_utterances: bytes
) -> None:
    config = rt_config()
    context = Mock()  # Serve's gRPC context: the status goes on it (set_code/set_details)
    stream = GrpcStream(config.limits, context)
    session = RivaStreamingRecognition(config, models(["one two"]), vad.stream(), stream.emit)
    got = [m async for m in stream.run(session, requests(config_request(), audio=two_utterances))]
    assert "".join(r.alternatives[0].transcript for m in got for r in m.results) == "one two one two "
    context.set_code.assert_not_called()  # OK
    context = Mock()
    stream = GrpcStream(config.limits, context)
    session = RivaStreamingRecognition(config, models(["one two"]), vad.stream(), stream.emit)
    bad = asr.StreamingRecognizeRequest(audio_content=b"\x00\x00")
    assert [m async for m in stream.run(session, requests(bad))] == []
    context.set_code.assert_called_once_with(grpc.StatusCode.INVALID_ARGUMENT)
    assert "streaming_config first" in context.set_details.call_args.args[0]


async def test_the_listed_model_names_are_accepted(vad: SileroVAD) -> None:
    for config in recognition_config(rt_config()).model_config:
        driver = Driver(vad)
        await driver.send(config_request(model=config.model_name))
        await driver.close()
