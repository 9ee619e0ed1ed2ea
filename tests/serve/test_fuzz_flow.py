"""Hostile input on ``/v1/flow`` against the real app, beside a healthy Flow conversation.

Flow clients raise on any ``Error``, so a bad message ends its conversation: ``Error`` (with
the documented type and a reason naming what was wrong), then ``ConversationEnded``, then
the socket closes. Each case runs on its own connection; meanwhile a healthy conversation
speaks a question and must get its spoken answer, and the server must still be healthy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

from serve_app.engine.audio.pcm import resample_pcm16
from tests.conftest import deployed_app

APP = "fuzzflow"
TIMEOUT_S = 60.0
START: dict[str, Any] = {
    "message": "StartConversation",
    "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
    "conversation_config": {"template_id": "default"},
}


def start(**changes: Any) -> dict[str, Any]:
    """A StartConversation with top-level fields replaced (``None`` removes one)."""
    message = {**START, **changes}
    return {k: v for k, v in message.items() if v is not None}


@dataclass
class FlowCase:
    """Frames sent (after a valid start unless ``started`` is False) and the expected answer."""

    name: str
    frames: list[Any]
    error: str | None  # the Error's type; None: no error, the conversation goes on
    reason: str = ""
    started: bool = True
    replies: list[str] = field(default_factory=list)


CASES = [
    FlowCase(
        "text before start", [{"message": "AudioEnded", "last_seq_no": 0}], "protocol_error", "before", False
    ),
    FlowCase("audio before start", [b"\x00\x00"], "protocol_error", "before audio", False),
    FlowCase("not json", ["{'message': 1"], "protocol_error", "not valid JSON", False),
    FlowCase("json array", ["[1, 2]"], "protocol_error", "JSON object", False),
    FlowCase("json string", ['"StartConversation"'], "protocol_error", "JSON object", False),
    FlowCase("deep nesting", ["[" * 100_000], "protocol_error", "not valid JSON", False),
    FlowCase("unknown message", [{"message": "Dance"}], "protocol_error", "Unknown message type", False),
    FlowCase("message not a string", [{"message": 7}], "protocol_error", "Unknown message type", False),
    FlowCase("no message field", [{"seq_no": 1}], "protocol_error", "Unknown message type", False),
    FlowCase(
        "no conversation_config",
        [start(conversation_config=None)],
        "config_error",
        "conversation_config",
        False,
    ),
    FlowCase(
        "template_id a number",
        [start(conversation_config={"template_id": 1})],
        "config_error",
        "template_id",
        False,
    ),
    FlowCase(
        "unknown template",
        [start(conversation_config={"template_id": "x"})],
        "config_error",
        "Unknown template_id",
        False,
    ),
    FlowCase(
        "opus encoding",
        [start(audio_format={"type": "raw", "encoding": "opus"})],
        "config_error",
        "encoding",
        False,
    ),
    FlowCase(
        "rate too low",
        [start(audio_format={"type": "raw", "sample_rate": 4000})],
        "config_error",
        "sample_rate",
        False,
    ),
    FlowCase(
        "rate a string",
        [start(audio_format={"type": "raw", "sample_rate": "16000"})],
        "config_error",
        "sample_rate",
        False,
    ),
    FlowCase("file audio format", [start(audio_format={"type": "file"})], "config_error", "type", False),
    FlowCase(
        "variables not strings",
        [start(conversation_config={"template_id": "default", "template_variables": {"a": 1}})],
        "config_error",
        "template_variables",
        False,
    ),
    FlowCase("oversized text", ["x" * ((1 << 20) + 1)], "protocol_error", "exceeds", False),
    FlowCase("second start", [START], "protocol_error", "once"),
    FlowCase("odd byte count", [b"\x00" * 321], "protocol_error", "whole number"),
    FlowCase("oversized audio frame", [b"\x00" * ((1 << 20) + 2)], "protocol_error", "exceeds"),
    FlowCase("seq_no a string", [{"message": "AudioReceived", "seq_no": "1"}], "protocol_error", "seq_no"),
    FlowCase("AudioEnded without last_seq_no", [{"message": "AudioEnded"}], "protocol_error", "last_seq_no"),
    FlowCase(
        "ToolResult bad status",
        [{"message": "ToolResult", "id": "t", "status": "maybe"}],
        "protocol_error",
        "status",
    ),
    FlowCase(
        "ToolResult for nothing",
        [{"message": "ToolResult", "id": "t", "status": "ok"}],
        None,
        replies=["Warning"],
    ),
    FlowCase("AudioReceived ack", [{"message": "AudioReceived", "seq_no": 3, "buffering": 0.01}], None),
    FlowCase("empty audio frame", [b""], None, replies=["AudioAdded"]),
]


@pytest.fixture(scope="module")
def flow_url(serve_instance: str) -> Iterator[str]:
    args = {
        "asr": {"backend": "fake", "options": {"transcripts": ["What is the capital of France?"]}},
        "llm": {
            "backend": "fake",
            "options": {"reply": "The capital of France is Paris.", "tokens_per_s": 50},
        },
        "tts": {"backend": "fake", "options": {"realtime_factor": 0.2}},
    }
    with deployed_app(APP, args) as prefix:
        yield f"{serve_instance}{prefix}/v1/flow"


async def send(ws: Any, frame: Any) -> None:
    await ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)


async def receive_until(ws: Any, done: Callable[[list[Any]], bool]) -> list[Any]:
    """Messages (JSON decoded; binary as bytes) until ``done(messages)`` or the socket closes."""
    messages: list[Any] = []

    async def read() -> None:
        async for raw in ws:
            messages.append(raw if isinstance(raw, bytes) else json.loads(raw))
            if done(messages):
                return

    await asyncio.wait_for(read(), TIMEOUT_S)
    return messages


def kinds(messages: list[Any]) -> list[str]:
    return [m["message"] for m in messages if isinstance(m, dict)]


async def run_case(url: str, case: FlowCase) -> None:
    async with websockets.connect(url, max_size=None, open_timeout=TIMEOUT_S) as ws:
        if case.started:
            await send(ws, START)
            started = await receive_until(ws, lambda ms: len(ms) == 2)
            assert kinds(started) == ["ConversationStarted", "Info"]
        for frame in case.frames:
            await send(ws, frame)
        if case.error is None:
            await send(ws, b"\x00" * 640)  # a valid frame: the conversation must still answer it
            got = await receive_until(ws, lambda ms: "AudioAdded" in kinds(ms[len(case.replies) :]))
            assert kinds(got)[: len(case.replies)] == case.replies and "Error" not in kinds(got), kinds(got)
            return
        got = await receive_until(ws, lambda ms: kinds(ms)[-1:] == ["ConversationEnded"])
        assert kinds(got) == ["Error", "ConversationEnded"], kinds(got)
        assert got[0]["type"] == case.error and case.reason in got[0]["reason"], got[0]


async def healthy_conversation(url: str, utterance: bytes) -> list[Any]:
    """A spoken question; the answer's phrases and audio, until ConversationEnded."""
    async with websockets.connect(url, max_size=None, open_timeout=TIMEOUT_S) as ws:
        await send(ws, START)
        pcm = resample_pcm16(utterance, 24_000, 16_000)
        for offset in range(0, len(pcm), 640):
            await ws.send(pcm[offset : offset + 640])
        await send(ws, {"message": "AudioEnded", "last_seq_no": -(-len(pcm) // 640)})
        return await receive_until(ws, lambda ms: kinds(ms)[-1:] == ["ConversationEnded"])


async def test_hostile_flow_input_ends_only_its_own_conversation(
    flow_url: str, make_utterance: Callable[..., bytes]
) -> None:
    utterance = make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
    healthy = asyncio.create_task(healthy_conversation(flow_url, utterance))
    failures: dict[str, str] = {}
    for case in CASES:
        try:
            await run_case(flow_url, case)
        except Exception as exc:
            failures[case.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    assert failures == {}
    messages = await healthy
    assert "Error" not in kinds(messages)
    assert kinds(messages)[-3:] == ["ResponseCompleted", "ConversationEnding", "ConversationEnded"]
    assert any(isinstance(m, bytes) for m in messages)
    assert [m["content"] for m in messages if isinstance(m, dict) and m["message"] == "ResponseStarted"] == [
        "The capital of France is Paris."
    ]
