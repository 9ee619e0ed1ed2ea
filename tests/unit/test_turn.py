"""The engine alone (no protocol): typed events out, and each Turn's state machine.

A ``VoiceSession`` with scripted fake models and the real Silero VAD on Piper speech; the
events it publishes are collected as they are, typed.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.engine import events as ev
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.errors import RequestRefused
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.session import VoiceSession
from serve_app.engine.settings import VoiceSettings
from serve_app.engine.turn import _NEXT, Turn, TurnPhase, TurnStateError
from tests.protocol_drivers import app_config

RATE = 24_000
P = TurnPhase


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


class Engine:
    """A VoiceSession and the events it published."""

    def __init__(self, vad: SileroVAD, llm: Any = None, **session: Any) -> None:
        config = app_config(**session)
        self.llm = llm or FakeLLM(None, {})
        models = ModelClients(FakeASR(None, {}), self.llm, FakeTTS(None, {}))
        settings = VoiceSettings.from_defaults("sess_test", config.session, RATE, RATE)
        self.events: list[ev.EngineEvent] = []
        self.observed: list[ev.EngineEvent] = []
        self.seen_turns: dict[str, Turn] = {}
        self._changed = asyncio.Event()
        self.session = VoiceSession(config, models, vad.stream(), settings, self._sink, self._observe)

    async def _sink(self, event: ev.EngineEvent) -> None:
        self.events.append(event)
        for turn in self.session.turns:
            self.seen_turns.setdefault(turn.item_id, turn)
        self._changed.set()

    async def _observe(self, event: ev.EngineEvent) -> None:
        self.observed.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type, count: int = 1) -> Any:
        async def poll() -> Any:
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(kind)[count - 1]

        return await asyncio.wait_for(poll(), 20)

    async def speak(self, pcm: bytes, realtime: bool = False) -> None:
        frame = RATE * 20 // 1000 * 2
        for start in range(0, len(pcm), frame):
            await self.session.append_audio(pcm[start : start + frame])
            await asyncio.sleep(0.02 if realtime else 0)


def test_the_state_machine_only_moves_forward() -> None:
    ended = {P.DONE, P.CANCELLED}
    for phase, following in _NEXT.items():
        assert (not following) == (phase in ended)
        assert phase not in following
    order = [P.LISTENING, P.USER_SPEAKING, P.THINKING, P.SPEAKING]
    for earlier, later in itertools.pairwise(order):
        assert later in _NEXT[earlier] and earlier not in _NEXT[later]


async def test_an_illegal_transition_is_refused(vad: SileroVAD) -> None:
    engine = Engine(vad)
    turn = await engine.session._open_turn()  # the session's own factory: its group running
    turn.reply_now(None, [])
    with pytest.raises(TurnStateError, match="thinking → user_speaking"):
        turn.user_started_speaking()
    await engine.wait_for(ev.ReplyDone)
    await turn.finished()
    assert turn.history == [P.LISTENING, P.THINKING, P.SPEAKING, P.DONE]
    await engine.session.close()


async def test_a_spoken_turn_publishes_typed_events_and_walks_every_phase(
    vad: SileroVAD, make_utterance: Any
) -> None:
    engine = Engine(vad, speculative_turns=False)
    try:
        await engine.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        done = await engine.wait_for(ev.ReplyDone)
        kinds = [type(e).__name__ for e in engine.events]
        assert kinds[:5] == [
            "SpeechStarted",
            "SpeechStopped",
            "InputCommitted",
            "TranscriptFinal",
            "ReplyStarted",
        ]
        assert kinds[-1] == "ReplyDone" and {"ReplyText", "ReplyAudio"} <= set(kinds)
        final = engine.of(ev.TranscriptFinal)[0]
        stopped = engine.of(ev.SpeechStopped)[0]
        assert final.text == "What is the capital of France?"
        assert 0 <= final.audio_start_ms < final.audio_end_ms == stopped.audio_end_ms
        assert all(a.sample_rate == RATE for a in engine.of(ev.ReplyAudio))
        assert done.status == "completed" and done.voice_turn and done.spoken_text.startswith("You said:")
        [turn] = engine.seen_turns.values()
        await turn.finished()
        assert turn.history == [P.LISTENING, P.USER_SPEAKING, P.THINKING, P.SPEAKING, P.DONE]
        assert engine.session.turns == []  # a finished turn is let go
        measured = {e.metric for e in engine.observed if isinstance(e, ev.StageMeasured)}
        assert {"voxray_endpointing_wait_seconds", "voxray_asr_latency_seconds"} <= measured
        assert not any(isinstance(e, ev.StageMeasured) for e in engine.events)  # never sent to clients
    finally:
        await engine.session.close()


async def test_barge_in_cancels_the_turn_and_the_next_one_starts(vad: SileroVAD, make_utterance: Any) -> None:
    llm = FakeLLM(None, {"reply": " ".join(f"Sentence {i} is here." for i in range(40)), "tokens_per_s": 50})
    engine = Engine(vad, llm=llm, max_audio_lead_ms=300)
    try:
        await engine.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
        )
        await engine.wait_for(ev.ReplyAudio, 3)
        await engine.speak(
            make_utterance("Stop, please.", lead_silence_s=0.1, trail_silence_s=0.0), realtime=True
        )
        done = await engine.wait_for(ev.ReplyDone)
        assert (done.status, done.reason) == ("cancelled", "turn_detected")
        first, second = sorted(engine.seen_turns.values(), key=lambda t: len(t.history), reverse=True)[:2]
        await first.finished()
        assert first.history[-2:] == [P.SPEAKING, P.CANCELLED]
        assert second.phase is P.USER_SPEAKING  # the interruption is the next turn
        await asyncio.sleep(0.2)
        assert llm.stats()["active_generations"] == 0
    finally:
        await engine.session.close()


async def test_refusals_change_nothing(vad: SileroVAD) -> None:
    engine = Engine(vad)
    try:
        with pytest.raises(RequestRefused) as refused:
            await engine.session.commit_input()
        assert refused.value.code == "input_audio_buffer_commit_empty"
        with pytest.raises(RequestRefused) as refused:
            await engine.session.cancel_response()
        assert refused.value.code == "response_cancel_not_active"
        with pytest.raises(RequestRefused) as refused:
            engine.session.delete_item("item_missing")
        assert (refused.value.code, refused.value.param) == ("item_not_found", "item_id")
        assert engine.events == [] and engine.session.turns == []
    finally:
        await engine.session.close()


async def test_close_cancels_everything_in_flight(vad: SileroVAD, make_utterance: Any) -> None:
    llm = FakeLLM(None, {"reply": " ".join(f"Sentence {i}." for i in range(80)), "tokens_per_s": 20})
    engine = Engine(vad, llm=llm)
    await engine.speak(
        make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
    )
    await engine.wait_for(ev.ReplyText)
    turns = engine.session.turns
    await engine.session.close()
    assert all(turn.phase is not P.DONE for turn in turns)
    await asyncio.sleep(0.1)
    assert llm.stats()["active_generations"] == 0
