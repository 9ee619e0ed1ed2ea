"""The Speechmatics Flow adapter in-process: the conversation's life, templates, bad input, audio.

Real Silero VAD and Piper speech, fake models (``tests/protocol_drivers``). The real Flow CLI
runs against a real server in ``tests/serve/test_flow_cli.py``.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.backends.fake import FakeASR, FakeLLM
from serve_app.config import FlowTemplate
from serve_app.engine.audio.vad import SileroVAD
from serve_app.protocols.flow import messages as fm
from serve_app.protocols.flow.audio import FRAME_UNIT, FrameWriter, decode_audio
from serve_app.protocols.speechmatics_session import close_error_type
from tests.protocol_drivers import FlowDriver, Models


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


def kinds(driver: FlowDriver) -> list[str]:
    return [m["message"] for m in driver.json_messages()]


async def test_a_conversation_from_start_to_end(vad: SileroVAD, make_utterance: Any) -> None:
    driver = FlowDriver(vad, Models())
    await driver.start()
    try:
        assert kinds(driver) == ["ConversationStarted", "Info"]
        info = driver.of("Info")[0]
        assert (info["type"], info["conversation_duration_limit"]) == ("conversation_duration_limit", 3600)
        speech = make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=0.2)
        await driver.speak(speech)  # no trailing silence to end the turn: AudioEnded does
        frames = len(driver.of("AudioAdded"))
        assert [m["seq_no"] for m in driver.of("AudioAdded")] == list(range(1, frames + 1))
        assert frames == -(-len(speech) * 2 // 3 // 256)  # one per 256-byte frame sent (24 → 16 kHz)
        await driver.session.handle_message(json.dumps({"message": "AudioEnded", "last_seq_no": frames}))
        await driver.wait(
            lambda ms: any(m == {"message": "ConversationEnded"} for m in ms if isinstance(m, dict))
        )
        assert driver.ended_after == 5.0  # the client closes; the server only if it does not
        order = [k for k in kinds(driver) if k != "AudioAdded"]
        assert order[:2] == ["ConversationStarted", "Info"]
        assert (
            order.index("AddTranscript") < order.index("ResponseStarted") < order.index("ResponseCompleted")
        )
        assert order[-2:] == ["ConversationEnding", "ConversationEnded"]
        [transcript] = driver.of("AddTranscript")
        assert transcript["metadata"]["transcript"] == "What is the capital of France?"
        assert transcript["metadata"]["end_time"] > transcript["metadata"]["start_time"] >= 0
        words = [r["alternatives"][0]["content"] for r in transcript["results"] if r["type"] == "word"]
        assert words == ["What", "is", "the", "capital", "of", "France"]
        audio = [m for m in driver.messages if isinstance(m, bytes)]
        assert audio and all(len(frame) % FRAME_UNIT == 0 for frame in audio)
        started, completed = driver.of("ResponseStarted"), driver.of("ResponseCompleted")
        assert len(started) == len(completed) >= 1
        assert completed[-1]["end_time"] > started[0]["start_time"]
        await driver.session.handle_message(
            json.dumps({"message": "AudioReceived", "seq_no": 1, "buffering": 0.01})
        )
        assert kinds(driver)[-1] == "ConversationEnded"  # nothing more after the end
    finally:
        await driver.close()


async def test_a_template_sets_the_assistant_and_greets(vad: SileroVAD) -> None:
    models = Models(llm=FakeLLM(None, {}))
    driver = FlowDriver(vad, models)
    variables = {"template_variables": {"user_name": "Ada"}}
    await driver.start(
        "flow-service-assistant-amelia",
        conversation_config={"template_id": "flow-service-assistant-amelia", **variables},
    )
    try:
        [reply] = await driver.replies()
        assert reply.text == "Hi, I'm Amelia. What can I do for you?"
        assert models.llm.stats()["tokens_generated"] == 0  # a greeting is said, not generated
        assert "talking with Ada." in driver.session.engine.settings.instructions
    finally:
        await driver.close()


def test_template_placeholders_need_defaults_and_fill_from_the_client() -> None:
    with pytest.raises(ValueError, match="placeholders"):
        FlowTemplate(instructions="Hello {name}")
    template = FlowTemplate(instructions="Hello {name}, {{literal}}", variables={"name": "you"})
    assert template.fill(template.instructions or "", {}) == "Hello you, {{literal}}"
    assert template.fill(template.instructions or "", {"name": "Ada"}) == "Hello Ada, {{literal}}"


@pytest.mark.parametrize(
    ("first", "error_type", "words"),
    [
        ('{"message": "AudioEnded", "last_seq_no": 0}', "protocol_error", "StartConversation before"),
        (b"\x00\x00", "protocol_error", "StartConversation before audio"),
        ("not json", "protocol_error", "not valid JSON"),
        ('{"message": "Dance"}', "protocol_error", "Unknown message type"),
        ('["StartConversation"]', "protocol_error", "JSON object"),
        ('{"message": "StartConversation"}', "config_error", "conversation_config"),
        (
            '{"message": "StartConversation", "conversation_config": {"template_id": 5}}',
            "config_error",
            "template_id",
        ),
        (
            '{"message": "StartConversation", "conversation_config": {"template_id": "nope"}}',
            "config_error",
            "nope",
        ),
        (
            '{"message": "StartConversation", "conversation_config": {"template_id": "default"},'
            ' "audio_format": {"type": "raw", "encoding": "opus"}}',
            "config_error",
            "encoding",
        ),
    ],
)
async def test_bad_input_ends_the_conversation_with_an_error(
    vad: SileroVAD, first: str | bytes, error_type: str, words: str
) -> None:
    driver = FlowDriver(vad, Models())
    try:
        await driver.session.handle_message(first)
        assert kinds(driver) == ["Error", "ConversationEnded"]
        [error] = driver.of("Error")
        assert error["type"] == error_type and words in error["reason"]
        assert driver.ended_after is not None
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ('{"message": "StartConversation", "conversation_config": {"template_id": "default"}}', "once"),
        ('{"message": "AudioReceived", "seq_no": "one"}', "seq_no"),
        (b"\x00" * 3, "whole number"),
        (b"\x00" * (2 << 20), "exceeds"),
    ],
)
async def test_bad_input_after_the_start(vad: SileroVAD, message: str | bytes, words: str) -> None:
    driver = FlowDriver(vad, Models())
    await driver.start()
    try:
        await driver.session.handle_message(message)
        assert kinds(driver) == ["ConversationStarted", "Info", "Error", "ConversationEnded"]
        assert words in driver.of("Error")[0]["reason"]
        assert not driver.of("AudioAdded")  # a refused frame is not acknowledged
    finally:
        await driver.close()


async def test_tools_are_stored_with_a_warning_and_unknown_fields_ignored(vad: SileroVAD) -> None:
    driver = FlowDriver(vad, Models())
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    await driver.start(tools=[tool], future_field={"x": 1})
    try:
        assert kinds(driver) == ["ConversationStarted", "Info", "Warning"]
        assert "get_weather" in driver.of("Warning")[0]["reason"]
        assert [t.function.name for t in driver.session.tools] == ["get_weather"]
    finally:
        await driver.close()


async def test_a_transcription_failure_ends_with_an_asr_error(vad: SileroVAD, make_utterance: Any) -> None:
    driver = FlowDriver(vad, Models(asr=FakeASR(None, {"fail": True})))
    await driver.start()
    try:
        await driver.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        await driver.wait(
            lambda ms: any(m == {"message": "ConversationEnded"} for m in ms if isinstance(m, dict))
        )
        assert driver.of("Error")[0]["type"] == "asr_error"
    finally:
        await driver.close()


def test_audio_decoding() -> None:
    samples = np.array([0, 1000, -1000, 32767, -32768], dtype="<i2")
    assert decode_audio(samples.tobytes(), "pcm_s16le") == samples.tobytes()
    floats = np.array([0.0, 0.5, -0.5, 1.5, float("nan")], dtype="<f4").tobytes()
    assert np.frombuffer(decode_audio(floats, "pcm_f32le"), "<i2").tolist() == [0, 16383, -16383, 32767, 0]
    # G.711 μ-law: 0xFF and 0x7F are zero, 0x80 and 0x00 the loudest positive and negative values.
    decoded = np.frombuffer(decode_audio(bytes([0xFF, 0x7F, 0x80, 0x00]), "mulaw"), "<i2").tolist()
    assert decoded == [0, 0, 32124, -32124]
    with pytest.raises(fm.FlowProtocolError):
        decode_audio(b"\x00" * 6, "pcm_f32le")


def test_frames_are_whole_256_byte_units_sent_at_once_and_only_the_last_is_padded() -> None:
    writer = FrameWriter(512)
    assert writer.push(b"\x01" * 700) == [b"\x01" * 512]  # 188 bytes wait for more
    assert writer.push(b"\x01" * 100) == [b"\x01" * 256]
    assert writer.push(b"\x02" * 1100) == [b"\x01" * 32 + b"\x02" * 480, b"\x02" * 512]
    [last] = writer.flush()
    assert last == b"\x02" * 108 + b"\x00" * 148
    assert writer.flush() == []
    with pytest.raises(ValueError):
        FrameWriter(300)


def test_transcript_results_split_words_and_punctuation() -> None:
    message = fm.add_transcript("Well, it's Paris.", 1.0, 2.0, partial=False)
    assert message["message"] == "AddTranscript" and message["metadata"]["transcript"] == "Well, it's Paris."
    contents = [(r["type"], r["alternatives"][0]["content"]) for r in message["results"]]
    assert contents == [
        ("word", "Well"),
        ("punctuation", ","),
        ("word", "it's"),
        ("word", "Paris"),
        ("punctuation", "."),
    ]
    times = [(r["start_time"], r["end_time"]) for r in message["results"]]
    assert times[0][0] == 1.0 and times[-1][1] == 2.0
    assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(times))
    assert message["results"][-1]["is_eos"] is True


def test_every_server_close_has_a_speechmatics_error_type() -> None:
    """Each close code voxray's server sends maps to a Flow/RT error type other than unknown_error."""
    root = Path(__file__).resolve().parents[2] / "serve_app"
    source = "\n".join(path.read_text() for path in root.rglob("*.py"))
    codes = set(re.findall(r'refusal\(\s*"(\w+)"', source))
    codes |= set(re.findall(r'CloseConnection\(\s*\w+,\s*"(\w+)"', source))
    assert len(codes) >= 10
    unknown = {code for code in codes if close_error_type(code, "internal_error") == "unknown_error"}
    assert not unknown, unknown
