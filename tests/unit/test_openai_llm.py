"""OpenAILLM against a tiny real OpenAI-compatible SSE server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from deployments.backends.openai_llm import OpenAILLM
from deployments.types import ChatMessage, SamplingParams


class ChatServer:
    """Serves ``/v1/chat/completions`` as SSE; records requests and how each stream ended."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.streams: list[dict[str, Any]] = []  # {"sent": int, "ended": "complete"|"disconnected"}
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ChatServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if body["model"] != "served-model":
            return JSONResponse(
                {"error": {"message": "no such model", "type": "NotFoundError"}}, status_code=404
            )
        words = body.get("words", ["Paris ", "is ", "the ", "capital."])
        delay = float(body.get("delay_s", 0.0))
        record: dict[str, Any] = {"sent": 0, "ended": None}
        self.streams.append(record)

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse({"role": "assistant"}, None)
                for word in words:
                    await asyncio.sleep(delay)
                    yield _sse({"content": word}, None)
                    record["sent"] += 1
                yield _sse({}, "stop")
                yield "data: [DONE]\n\n"
                record["ended"] = "complete"
            except BaseException:  # Starlette cancels the body when the client disconnects
                record["ended"] = "disconnected"
                raise

        return StreamingResponse(events(), media_type="text/event-stream")


def _sse(delta: dict[str, Any], finish: str | None) -> str:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "served-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    with ChatServer() as srv:
        yield srv


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Capital of France?"),
]


async def test_streams_deltas_and_sends_the_request(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXRAY_TEST_KEY", "sk-test-123")
    llm = OpenAILLM(
        "served-model",
        {"base_url": server.base_url, "api_key_env": "VOXRAY_TEST_KEY", "extra_body": {"top_k": 5}},
    )
    deltas = [d async for d in llm.chat(MESSAGES, SamplingParams(max_tokens=17, temperature=0.3, seed=7))]
    assert deltas == ["Paris ", "is ", "the ", "capital."]
    request = server.requests[-1]
    assert request["headers"]["authorization"] == "Bearer sk-test-123"
    body = request["body"]
    assert body["model"] == "served-model" and body["stream"] is True
    assert body["messages"] == [m.model_dump() for m in MESSAGES]
    assert (body["max_tokens"], body["temperature"], body["seed"], body["top_k"]) == (17, 0.3, 7, 5)
    assert llm.stats() == {"active_generations": 0, "tokens_generated": 4, "aborted_generations": 0}
    await llm.aclose()


async def test_missing_key_variable_sends_empty_key(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOXRAY_UNSET_KEY", raising=False)
    llm = OpenAILLM("served-model", {"base_url": server.base_url, "api_key_env": "VOXRAY_UNSET_KEY"})
    assert [d async for d in llm.chat(MESSAGES, SamplingParams())]
    assert server.requests[-1]["headers"]["authorization"] == "Bearer EMPTY"
    assert "seed" not in server.requests[-1]["body"]
    await llm.aclose()


async def test_closing_early_closes_the_http_stream(server: ChatServer) -> None:
    llm = OpenAILLM(
        "served-model",
        {"base_url": server.base_url, "extra_body": {"words": ["w "] * 500, "delay_s": 0.01}},
    )
    stream = llm.chat(MESSAGES, SamplingParams())
    received = [await anext(stream), await anext(stream)]
    assert received == ["w ", "w "]
    record = server.streams[-1]
    await stream.aclose()
    await _wait_for(lambda: record["ended"] is not None)
    assert record["ended"] == "disconnected"
    assert record["sent"] < 500
    assert llm.stats()["aborted_generations"] == 1 and llm.stats()["active_generations"] == 0
    await llm.aclose()


async def test_cancelling_the_consumer_closes_the_http_stream(server: ChatServer) -> None:
    llm = OpenAILLM(
        "served-model",
        {"base_url": server.base_url, "extra_body": {"words": ["w "] * 500, "delay_s": 0.01}},
    )
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.chat(MESSAGES, SamplingParams()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    record = server.streams[-1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_for(lambda: record["ended"] is not None)
    assert record["ended"] == "disconnected" and record["sent"] < 500
    assert llm.stats()["active_generations"] == 0
    await llm.aclose()


async def test_server_errors_reach_the_caller(server: ChatServer) -> None:
    import openai

    llm = OpenAILLM("unknown-model", {"base_url": server.base_url, "max_retries": 0})
    with pytest.raises(openai.NotFoundError):
        async for _ in llm.chat(MESSAGES, SamplingParams()):
            pass
    await llm.aclose()


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        OpenAILLM("m", {})
    with pytest.raises(ValidationError, match="bogus"):
        OpenAILLM("m", {"base_url": "http://x/v1", "bogus": 1})
    with pytest.raises(ValueError, match="needs `model`"):
        OpenAILLM(None, {"base_url": "http://x/v1"})
