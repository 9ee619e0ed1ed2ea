"""The engine's turn-taking, run through every wire protocol's adapter.

Each scenario speaks real Piper speech (real Silero VAD) to an adapter wired to fake models
and reads the replies back the way that protocol's client would (``tests/protocol_drivers``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.engine.audio.vad import SileroVAD
from tests.protocol_drivers import FlowDriver, Models, RealtimeDriver

DRIVERS = {"realtime": RealtimeDriver, "flow": FlowDriver}


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture(params=sorted(DRIVERS))
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_spoken_question_gets_a_spoken_answer(
    vad: SileroVAD, protocol: str, make_utterance: Any
) -> None:
    driver = DRIVERS[protocol](vad, Models())
    await driver.start()
    try:
        await driver.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        [reply] = await driver.replies()
        assert reply.status == "completed"
        assert reply.text.startswith("You said: What is the capital of France?")
        assert reply.audio_bytes > 16_000  # over half a second at 16 kHz or a third at 24 kHz
        assert driver.transcripts() == ["What is the capital of France?"]
    finally:
        await driver.close()


async def test_barge_in_stops_the_reply_and_the_models(
    vad: SileroVAD, protocol: str, make_utterance: Any
) -> None:
    reply = " ".join(f"Sentence number {i} is here." for i in range(40))
    models = Models(
        llm=FakeLLM(None, {"reply": reply, "tokens_per_s": 50}), tts=FakeTTS(None, {"realtime_factor": 0.5})
    )
    driver = DRIVERS[protocol](vad, models, max_audio_lead_ms=300)
    await driver.start()
    try:
        await driver.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
        )
        await driver.wait(
            lambda ms: (
                sum(isinstance(m, bytes) or "output_audio.delta" in str(m.get("type")) for m in ms) >= 3
            )
        )
        await driver.speak(
            make_utterance("Stop, please.", lead_silence_s=0.1, trail_silence_s=0.0), realtime=True
        )
        [first, *_] = await driver.replies()
        assert first.status == "interrupted"
        assert 0 < len(first.text) < len(reply) / 2
        await asyncio.sleep(0.2)
        assert models.llm.stats()["active_generations"] == 0
        assert models.llm.stats()["aborted_generations"] == 1
        assert models.tts.stats()["active_syntheses"] == 0
    finally:
        await driver.close()


async def test_a_pause_mid_sentence_gets_one_reply(
    vad: SileroVAD, protocol: str, make_utterance: Any
) -> None:
    """Speech that resumes after a short pause drops the speculative reply; one answer follows."""
    models = Models(llm=FakeLLM(None, {"tokens_per_s": 20}))
    driver = DRIVERS[protocol](vad, models)
    await driver.start()
    try:
        first = make_utterance("What is the capital", lead_silence_s=0.2, trail_silence_s=0.38)
        rest = make_utterance("of France?", lead_silence_s=0.0, trail_silence_s=1.0)
        await driver.speak(first + rest, realtime=True)
        [reply] = await driver.replies()
        assert reply.status == "completed"
        assert len(driver.transcripts()) == 1
        assert models.llm.stats()["aborted_generations"] >= 1  # the dropped guess stopped generating
        assert models.llm.stats()["active_generations"] == 0
    finally:
        await driver.close()


async def test_a_failed_transcription_gets_no_reply(
    vad: SileroVAD, protocol: str, make_utterance: Any
) -> None:
    models = Models(asr=FakeASR(None, {"fail": True}))
    driver = DRIVERS[protocol](vad, models)
    await driver.start()
    try:
        await driver.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        await driver.wait(
            lambda ms: any(
                "transcription" in str(m) or "asr_error" in str(m) for m in ms if not isinstance(m, bytes)
            )
        )
        await asyncio.sleep(0.3)
        assert models.llm.stats()["tokens_generated"] == 0
    finally:
        await driver.close()
