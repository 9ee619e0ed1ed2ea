"""A FAKE OpenAI-compatible chat-completions server, for tests only.

It does not run a model: it streams a scripted reply word by word as server-sent events in
OpenAI's ``chat.completion.chunk`` shape, then ``data: [DONE]``. It can be told to fail
(an HTTP error status, or a dropped connection) and counts the requests
it received and the streams whose client went away before the end, so tests can check that
a caller retried, fell back, or aborted a generation.

It runs uvicorn in a daemon thread on a free loopback port::

    with FakeOpenAIServer(reply="Paris is the capital.") as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
        ...
        server.mode = "error"  # later requests fail with ``status_code``
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

Mode = Literal["ok", "error", "disconnect"]


class FakeOpenAIServer:
    """Serves ``POST /v1/chat/completions`` (streaming only) on ``127.0.0.1``.

    Attributes may be changed while it runs; each request reads them when it arrives.

    Args:
        reply: The reply, streamed one word (with its leading space) per chunk.
        mode: ``ok`` streams the reply; ``error`` answers ``status_code`` with an OpenAI-style
            error body; ``disconnect`` drops the connection before the first chunk
            (the client sees a connection error).
        status_code: The status of ``error`` mode (503: the SDK's retryable "overloaded").
        word_delay_s: Pause before each word, so a test can interrupt a stream.

    Attributes:
        base_url: The ``/v1`` root to give a client.
        requests: Chat requests received, failed ones included.
        completed: Streams sent to the end.
        aborted: Streams whose client disconnected before the end.
        bodies: The JSON body of each request.
    """

    def __init__(
        self, reply: str = "Hello.", mode: Mode = "ok", status_code: int = 503, word_delay_s: float = 0.0
    ) -> None:
        self.reply = reply
        self.mode: Mode = mode
        self.status_code = status_code
        self.word_delay_s = word_delay_s
        self.requests = 0
        self.completed = 0
        self.aborted = 0
        self.bodies: list[dict[str, Any]] = []
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests += 1
        self.bodies.append(body)
        if self.mode == "error":
            error = {"message": "fake server told to fail", "type": "server_error", "code": None}
            return JSONResponse({"error": error}, status_code=self.status_code)
        words = self.reply.split(" ")
        model = body.get("model", "fake")
        mode, delay = self.mode, self.word_delay_s

        async def events() -> AsyncIterator[str]:
            finished = False
            try:
                if mode == "disconnect":
                    # Raised inside the streaming body: uvicorn can only drop the connection.
                    raise ConnectionAbortedError("fake server told to drop the connection")
                yield _chunk(model, {"role": "assistant", "content": ""}, None)
                for index, word in enumerate(words):
                    if delay:
                        await asyncio.sleep(delay)
                    yield _chunk(model, {"content": word if index == 0 else " " + word}, None)
                yield _chunk(model, {}, "stop")
                yield "data: [DONE]\n\n"
                finished = True
                self.completed += 1
            finally:
                # Starlette cancels this generator when the client disconnects mid-stream.
                if not finished and mode != "disconnect":
                    self.aborted += 1

        return StreamingResponse(events(), media_type="text/event-stream")


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> str:
    """One SSE event carrying a ``chat.completion.chunk``."""
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk)}\n\n"
