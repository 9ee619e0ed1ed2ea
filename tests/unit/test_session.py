"""Session turn-taking with the real Silero VAD on Piper speech and scripted fake models.

No Ray here: the Session gets the fake backends directly through ``ModelClients``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.config import AppConfig
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.observability import metrics
from serve_app.protocols.realtime.adapter import RealtimeSession
from serve_app.server.limits import POLICY_VIOLATION, CloseConnection
from tests.realtime_client import EventLog, user_text_item

RATE = 24_000
FRAME_BYTES = RATE * 20 // 1000 * 2  # 20 ms of PCM16


class Recorder(EventLog):
    """Collects the session's server events (validated, JSON-serialisable)."""

    async def emit(self, event: dict[str, Any]) -> None:
        self.record(json.loads(json.dumps(event)))


class Harness:
    """A Session wired to fakes, plus helpers to talk to it like a client."""

    def __init__(self, vad: SileroVAD, asr: Any = None, llm: Any = None, tts: Any = None, **cfg: Any) -> None:
        self.asr = asr or FakeASR(None, {"transcripts": ["What is the capital of France?"]})
        self.llm = llm or FakeLLM(None, {})
        self.tts = tts or FakeTTS(None, {})
        self.recorder = Recorder()
        config = AppConfig.model_validate(
            {
                "asr": {"backend": "fake"},
                "llm": {"backend": "fake"},
                "tts": {"backend": "fake"},
                "session": {"max_audio_lead_ms": 0, **cfg},
            }
        )
        self.session = RealtimeSession(
            config, ModelClients(self.asr, self.llm, self.tts), vad.stream(), self.recorder.emit
        )

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.session.handle_message(event if isinstance(event, str) else json.dumps(event))

    async def speak(self, pcm: bytes, realtime: bool = False) -> None:
        for start in range(0, len(pcm), FRAME_BYTES):
            frame = pcm[start : start + FRAME_BYTES]
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})
            await asyncio.sleep(0.02 if realtime else 0)


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture
async def harness(vad: SileroVAD):
    h = Harness(vad)
    await h.session.start()
    yield h
    await h.session.close()


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


async def test_spoken_turn_runs_in_protocol_order(harness: Harness, make_utterance: Any) -> None:
    await harness.speak(
        make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
    )
    done = await harness.recorder.wait_for("response.done")
    types = harness.recorder.types()
    expected_order = [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.output_audio.done",
        "response.output_item.done",
        "response.done",
    ]
    positions = [types.index(t) for t in expected_order]
    assert positions == sorted(positions), types
    assert done["response"]["status"] == "completed"
    transcript = harness.recorder.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert transcript == "What is the capital of France?"
    spoken = "".join(e["delta"] for e in harness.recorder.of("response.output_audio_transcript.delta"))
    assert (
        spoken.strip() == "You said: What is the capital of France? That is a fine question, and here is a "
        "short answer to it."
    )
    assert len(audio_of(harness.recorder.events)) > RATE  # over half a second of reply audio
    # The ASR got the utterance at 16 kHz, with the prefix padding and without most of the trailing silence.
    history = harness.session.engine.conversation.messages("sys")
    assert [m.role for m in history] == ["system", "user", "assistant"]
    assert history[2].content == spoken.strip()


async def test_barge_in_cancels_reply_and_keeps_only_what_was_sent(
    vad: SileroVAD, make_utterance: Any
) -> None:
    llm = FakeLLM(
        None, {"reply": " ".join(f"Sentence number {i} is here." for i in range(40)), "tokens_per_s": 50}
    )
    tts = FakeTTS(None, {"realtime_factor": 0.5})
    h = Harness(vad, llm=llm, tts=tts, max_audio_lead_ms=300)
    recorded = metrics.MemoryRecorder()
    metrics.use_recorder(recorded)
    await h.session.start()
    try:
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
        )
        await h.recorder.wait_for("response.output_audio.delta", count=3)
        await h.speak(make_utterance("Stop, please.", lead_silence_s=0.1, trail_silence_s=0.0), realtime=True)
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        # The interruption's speech_started came before the cancelled response.done.
        types = h.recorder.types()
        assert (
            types.index("response.done") > [i for i, t in enumerate(types) if t.endswith("speech_started")][1]
        )
        await asyncio.sleep(0.2)
        assert llm.stats()["active_generations"] == 0
        assert llm.stats()["aborted_generations"] == 1
        assert tts.stats()["active_syntheses"] == 0
        tokens = llm.stats()["tokens_generated"]
        await asyncio.sleep(0.3)
        assert llm.stats()["tokens_generated"] == tokens  # generation stopped for good
        spoken = "".join(e["delta"] for e in h.recorder.of("response.output_audio_transcript.delta")).strip()
        assistant = [m for m in h.session.engine.conversation.messages("") if m.role == "assistant"]
        assert assistant[0].content == spoken
        assert 0 < len(spoken) < len(llm.options.reply) / 2
        # Metrics: a cancelled turn, why, and how long stopping took; a cut-off stream has no rate.
        assert recorded.total("voxray_turns", outcome="cancelled") == 1
        assert recorded.total("voxray_responses_cancelled", reason="turn_detected") == 1
        [stop_s] = recorded.observed("voxray_barge_in_stop_latency_seconds")
        assert 0 <= stop_s < 5
        assert not recorded.observed("voxray_llm_tokens_per_second")
    finally:
        metrics.use_recorder(None)
        await h.session.close()


async def test_client_cancel_and_manual_turns(vad: SileroVAD, make_utterance: Any) -> None:
    llm = FakeLLM(None, {"tokens_per_s": 20})
    h = Harness(vad, llm=llm)
    await h.session.start()
    try:
        await h.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        updated = await h.recorder.wait_for("session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.2)
        )
        assert "input_audio_buffer.speech_started" not in h.recorder.types()  # no server VAD
        await h.send({"type": "input_audio_buffer.commit"})
        await h.recorder.wait_for("conversation.item.input_audio_transcription.completed")
        assert "response.created" not in h.recorder.types()  # manual: the client asks for it
        await h.send({"type": "response.create"})
        await h.recorder.wait_for("response.output_audio_transcript.delta")
        await h.send({"type": "response.create", "event_id": "evt_dup"})
        error = await h.recorder.wait_for("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "evt_dup"
        await h.send({"type": "response.cancel"})
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        await h.send({"type": "response.cancel", "event_id": "evt_none"})
        error = await h.recorder.wait_for("error", count=2)
        assert error["error"]["code"] == "response_cancel_not_active"
    finally:
        await h.session.close()


async def test_text_items_and_history_across_turns(harness: Harness) -> None:
    await harness.send(user_text_item("Hello there"))
    await harness.recorder.wait_for("conversation.item.done")
    await harness.send({"type": "response.create"})
    await harness.recorder.wait_for("response.done")
    await harness.send(user_text_item("And again"))
    await harness.send({"type": "response.create"})
    await harness.recorder.wait_for("response.done", count=2)
    history = harness.session.engine.conversation.messages("be brief")
    assert [m.role for m in history] == ["system", "user", "assistant", "user", "assistant"]
    assert history[0].content == "be brief"
    assert history[3].content == "And again"
    assert "And again" in history[4].content


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "no.such.event"}', "unknown_event_type"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@not base64@@@"}', "invalid_base64"),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
        ('{"type": "conversation.item.delete", "item_id": "item_nope"}', "item_not_found"),
    ],
)
async def test_bad_input_gets_an_error_and_the_session_goes_on(harness: Harness, raw: str, code: str) -> None:
    await harness.send(raw)
    error = await harness.recorder.wait_for("error")
    assert error["error"]["code"] == code
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"]
    await harness.send(user_text_item("still here?"))
    await harness.send({"type": "response.create"})
    done = await harness.recorder.wait_for("response.done")
    assert done["response"]["status"] == "completed"


async def test_audio_in_undeclared_format_is_refused(harness: Harness) -> None:
    await harness.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        }
    )
    error = await harness.recorder.wait_for("error")
    assert error["error"]["type"] == "invalid_request_error"
    assert "session.updated" not in harness.recorder.types()
    await harness.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode()}
    )
    error = await harness.recorder.wait_for("error", count=2)
    assert error["error"]["code"]


async def test_model_failure_mid_turn_is_an_error_and_a_failed_response(vad: SileroVAD) -> None:
    h = Harness(vad, llm=FakeLLM(None, {"fail_after_tokens": 3}))
    await h.session.start()
    try:
        await h.send(user_text_item("hi"))
        await h.send({"type": "response.create"})
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "failed"
        error = h.recorder.of("error")[0]
        assert error["error"]["type"] == "server_error"
        assert "FakeLLM scripted failure" in error["error"]["message"]
    finally:
        await h.session.close()


async def test_two_sessions_never_share_state(vad: SileroVAD, make_utterance: Any) -> None:
    a = Harness(vad, asr=FakeASR(None, {"transcripts": ["I am session A"]}), instructions="You are A.")
    b = Harness(vad, asr=FakeASR(None, {"transcripts": ["I am session B"]}), instructions="You are B.")
    for h in (a, b):
        await h.session.start()
    try:
        utterance = make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.9)
        await asyncio.gather(a.speak(utterance), b.speak(utterance))
        await asyncio.gather(a.recorder.wait_for("response.done"), b.recorder.wait_for("response.done"))
        for h, name in ((a, "A"), (b, "B")):
            messages = h.session.engine.conversation.messages(h.session.state.instructions)
            assert messages[0].content == f"You are {name}."
            assert messages[1].content == f"I am session {name}"
            assert f"I am session {name}" in messages[2].content
    finally:
        for h in (a, b):
            await h.session.close()


async def test_text_only_replies_skip_speech(harness: Harness) -> None:
    await harness.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    )
    await harness.send(user_text_item("Hi"))
    await harness.send({"type": "response.create"})
    done = await harness.recorder.wait_for("response.done")
    assert done["response"]["status"] == "completed"
    text = "".join(e["delta"] for e in harness.recorder.of("response.output_text.delta"))
    assert text.startswith("You said: Hi")
    assert harness.recorder.of("response.output_audio.delta") == []
    assert harness.tts.stats()["chunks"] == 0


async def test_asr_failure_is_reported_and_the_next_turn_works(vad: SileroVAD, make_utterance: Any) -> None:
    asr = FakeASR(None, {"fail": True})
    h = Harness(vad, asr=asr)
    await h.session.start()
    try:
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
        )
        failed = await h.recorder.wait_for("conversation.item.input_audio_transcription.failed")
        assert "FakeASR scripted failure" in failed["error"]["message"]
        assert (await h.recorder.wait_for("error"))["error"]["type"] == "server_error"
        assert "response.created" not in h.recorder.types()  # nothing was heard: no reply
        asr.options.fail = False
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
        )
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "completed"
    finally:
        await h.session.close()


async def test_tts_failure_fails_the_response_not_the_session(vad: SileroVAD) -> None:
    h = Harness(vad, tts=FakeTTS(None, {"fail": True}))
    await h.session.start()
    try:
        await h.send(user_text_item("hi"))
        await h.send({"type": "response.create"})
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "failed"
        assert "FakeTTS scripted failure" in h.recorder.of("error")[0]["error"]["message"]
        await h.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        assert (await h.recorder.wait_for("response.done", count=2))["response"]["status"] == "completed"
    finally:
        await h.session.close()


async def test_speculative_turn_answers_from_the_pause_transcript(
    vad: SileroVAD, make_utterance: Any
) -> None:
    asr = FakeASR(None, {"delay_ms": 100})
    h = Harness(vad, asr=asr)
    await h.session.start()
    try:
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=1.0)
        )
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        assert asr.stats()["calls"] == 1  # the pause's transcription was used, not redone
        metadata = done["response"]["metadata"]
        assert float(metadata["voxray.endpointing_ms"]) >= 0
        assert float(metadata["voxray.asr_ms"]) > 0
        types = h.recorder.types()
        # Nothing of the response went out before the turn really ended.
        assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
    finally:
        await h.session.close()


async def test_speech_resuming_after_a_pause_drops_the_speculation(
    vad: SileroVAD, make_utterance: Any
) -> None:
    llm = FakeLLM(None, {"tokens_per_s": 20})
    h = Harness(vad, llm=llm)
    recorded = metrics.MemoryRecorder()
    metrics.use_recorder(recorded)
    await h.session.start()
    try:
        first = make_utterance("What is the capital", lead_silence_s=0.2, trail_silence_s=0.38)
        rest = make_utterance("of France?", lead_silence_s=0.0, trail_silence_s=1.0)
        await h.speak(first + rest, realtime=True)
        done = await h.recorder.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        assert h.recorder.types().count("response.created") == 1
        assert h.recorder.types().count("input_audio_buffer.committed") == 1
        assert llm.stats()["aborted_generations"] >= 1  # the dropped guess stopped generating
        assert llm.stats()["active_generations"] == 0
        # The dropped guess was never seen: only the response the client got counts as a turn.
        assert recorded.total("voxray_turns") == 1
        assert recorded.total("voxray_responses_cancelled") == 0
    finally:
        metrics.use_recorder(None)
        await h.session.close()


async def test_speculation_can_be_switched_off(vad: SileroVAD, make_utterance: Any) -> None:
    llm = FakeLLM(None, {"tokens_per_s": 20})
    h = Harness(vad, llm=llm, speculative_turns=False)
    await h.session.start()
    try:
        first = make_utterance("What is the capital", lead_silence_s=0.2, trail_silence_s=0.38)
        rest = make_utterance("of France?", lead_silence_s=0.0, trail_silence_s=1.0)
        await h.speak(first + rest, realtime=True)
        await h.recorder.wait_for("response.done")
        assert llm.stats()["aborted_generations"] == 0  # nothing was started at the pause
    finally:
        await h.session.close()


async def test_error_events_and_closing_errors_are_counted_by_type_code_and_protocol(
    harness: Harness,
) -> None:
    memory = metrics.MemoryRecorder()
    metrics.use_recorder(memory)
    try:
        await harness.send("not json")
        closing = harness.session.closing_message(CloseConnection(POLICY_VIOLATION, "idle_timeout", "Idle."))
    finally:
        metrics.use_recorder(None)
    assert [(m["type"], m["error"]["code"]) for m in closing] == [("error", "idle_timeout")]
    errors = memory.total(
        "voxray_errors", type="invalid_request_error", code="invalid_json", protocol="realtime"
    )
    assert errors == 1
    assert memory.total("voxray_errors", code="idle_timeout", protocol="realtime") == 1
    assert memory.total("voxray_errors") == 2
