"""The real Ray Serve app (four deployments) with scripted fake models, over real WebSockets.

Model cost is scripted (deployments/backends/fake.py); everything else is real: Serve's
proxy, the Ingress, deployment handles, streaming, cancellation, the Silero VAD.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openai import AsyncOpenAI
from ray import serve

from tests.conftest import deploy_app
from tests.realtime_client import RealtimeTestClient, user_text_item, validate_server_event

APP = "fakeapp"
LONG_REPLY = " ".join(f"Sentence number {i} is here." for i in range(60))


FAKE_APP_ARGS: dict[str, Any] = {
    "asr": {"backend": "fake", "options": {"transcripts": ["What is the capital of France?"]}},
    "llm": {
        "backend": "fake",
        "options": {"reply": "You said: {user} " + LONG_REPLY, "tokens_per_s": 50},
    },
    "tts": {"backend": "fake", "options": {"realtime_factor": 0.2, "ms_per_char": 60}},
    "session": {"max_audio_lead_ms": 500},
}
"""Fake models with a long, slowly spoken reply: time to interrupt it."""


@pytest.fixture(scope="module")
def app_url(serve_instance: str) -> str:
    prefix = deploy_app(APP, FAKE_APP_ARGS)
    return f"{serve_instance}{prefix}/v1/realtime"


def llm_stats() -> dict[str, Any]:
    return serve.get_deployment_handle("LLM", APP).stats.remote().result()


async def test_spoken_turn_streams_reply_audio_and_valid_events(app_url: str, make_utterance: Any) -> None:
    async with RealtimeTestClient(app_url) as client:
        audio = make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        await client.stream_audio(audio, realtime=False)
        await client.wait_for("response.output_audio.delta", count=3)
        await client.send({"type": "response.cancel"})
        done = await client.wait_for("response.done")
        assert done["response"]["status"] == "cancelled"
        transcript = client.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
        assert transcript == "What is the capital of France?"
        full_reply = "You said: What is the capital of France? " + LONG_REPLY
        assert client.reply_text().startswith("You said:")
        assert full_reply.startswith(client.reply_text())  # only what was spoken before the cancel
        assert len(client.reply_audio()) > 0
    # Every received event was validated against openai's RealtimeServerEvent by the client.


async def test_barge_in_aborts_generation_in_the_llm_replica(app_url: str, make_utterance: Any) -> None:
    before = await asyncio.to_thread(llm_stats)
    async with RealtimeTestClient(app_url) as client:
        await client.stream_audio(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8),
            realtime=False,
        )
        try:
            await client.wait_for("response.output_audio.delta", count=2, timeout=15)
        except TimeoutError:
            raise AssertionError(client.types()) from None
        await client.stream_audio(
            make_utterance("Wait, stop.", lead_silence_s=0.1, trail_silence_s=0.0), realtime=True
        )
        done = await client.wait_for("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(llm_stats)
        assert after["aborted_generations"] >= before["aborted_generations"] + 1
        assert after["active_generations"] == 0
        tokens = after["tokens_generated"]
        await asyncio.sleep(0.5)
        assert (await asyncio.to_thread(llm_stats))["tokens_generated"] == tokens


async def test_bad_input_never_hurts_the_session_or_its_neighbour(app_url: str) -> None:
    async with RealtimeTestClient(app_url) as bad, RealtimeTestClient(app_url) as good:
        hostile: list[str | bytes] = [
            "{broken",
            "[]",
            json.dumps({"type": "no.such.event", "event_id": "evt_1"}),
            json.dumps({"type": "input_audio_buffer.append", "audio": "!!notbase64!!"}),
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00").decode()}),
            json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": 42}}),
            json.dumps({"type": "conversation.item.create"}),
            json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (2 << 20)}),
            b"\x00\x01binary frame",
        ]
        for raw in hostile:
            await bad.send(raw)
        await bad.wait_for("error", count=len(hostile), timeout=30)
        for error in bad.of("error"):
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["code"]
        assert bad.of("error")[2]["error"]["event_id"] == "evt_1"
        for client in (bad, good):
            await client.send(user_text_item("hi"))
            await client.send({"type": "response.create", "response": {"max_output_tokens": 8}})
        for client in (bad, good):
            done = await client.wait_for("response.done")
            assert done["response"]["status"] == "completed"
        assert good.of("error") == []


async def test_official_openai_sdk_holds_a_conversation(app_url: str, make_utterance: Any) -> None:
    base = app_url.removesuffix("/realtime")
    client = AsyncOpenAI(api_key="unused-locally", websocket_base_url=base)
    async with client.realtime.connect(model="voxray") as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        await connection.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "max_output_tokens": 12}
        )
        types: list[str] = []
        for _turn in range(2):
            audio = make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.9)
            for start in range(0, len(audio), 9600):
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(audio[start : start + 9600]).decode()
                )
            async for event in connection:
                types.append(event.type)
                if event.type == "response.done":
                    assert event.response.status == "completed", event
                    break
                if event.type == "error":
                    raise AssertionError(event.error)
        assert types.count("response.done") == 2
        assert "conversation.item.input_audio_transcription.completed" in types
        assert "response.output_audio.delta" in types


async def test_validator_rejects_a_malformed_event() -> None:
    """The event validator used everywhere above can fail."""
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        validate_server_event({"type": "response.done", "event_id": "e", "response": {"status": "exploded"}})
