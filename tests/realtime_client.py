"""A minimal raw-WebSocket Realtime client for tests, and the server-event validator.

Every event it receives is validated against the official ``openai`` package's
``RealtimeServerEvent`` union, so any test that talks to voxray also checks the wire format.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import websockets
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
FRAME_MS = 20


def validate_server_event(event: dict[str, Any]) -> Any:
    """Parse ``event`` as the official SDK would; raises if it is not a valid server event."""
    parsed = SERVER_EVENT.validate_python(event)
    assert parsed.type == event["type"], (parsed.type, event["type"])
    return parsed


def user_text_item(text: str) -> dict[str, Any]:
    """A ``conversation.item.create`` event carrying a user text message."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


class EventLog:
    """Server events in arrival order, with a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self._changed = asyncio.Event()

    def record(self, event: dict[str, Any]) -> None:
        """Add one event (validated against the official types first)."""
        validate_server_event(event)
        self.events.append(event)
        self.arrivals.append(time.perf_counter())
        self._changed.set()

    def of(self, type_: str) -> list[dict[str, Any]]:
        """Received events of one type, in order."""
        return [e for e in self.events if e["type"] == type_]

    def types(self) -> list[str]:
        """Types of all received events, in order."""
        return [e["type"] for e in self.events]

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until ``count`` events of ``type_`` arrived; return the ``count``-th."""

        async def _wait() -> dict[str, Any]:
            while len(self.of(type_)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(type_)[count - 1]

        return await asyncio.wait_for(_wait(), timeout)


class RealtimeTestClient(EventLog):
    """Connects, sends client events, and records (validated) server events with arrival times."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RealtimeTestClient:
        self._ws = await websockets.connect(self.url, max_size=None)
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("session.created")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        async for message in self._ws:
            self.record(json.loads(message))

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        """Send an event (a dict is JSON-encoded; str/bytes go as they are)."""
        await self._ws.send(json.dumps(event) if isinstance(event, dict) else event)

    async def stream_audio(self, pcm16: bytes, rate: int = 24_000, realtime: bool = True) -> float:
        """Send audio in 20 ms appends; returns the send time of the last frame."""
        frame = rate * FRAME_MS // 1000 * 2
        sent_at = time.perf_counter()
        for start in range(0, len(pcm16), frame):
            chunk = base64.b64encode(pcm16[start : start + frame]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})
            sent_at = time.perf_counter()
            await asyncio.sleep(FRAME_MS / 1000 if realtime else 0)
        return sent_at

    def reply_audio(self, response_id: str | None = None) -> bytes:
        """All reply PCM16 received (for one response, if given)."""
        return b"".join(
            base64.b64decode(e["delta"])
            for e in self.of("response.output_audio.delta")
            if response_id is None or e["response_id"] == response_id
        )

    def reply_text(self, response_id: str | None = None) -> str:
        """The assistant transcript received (for one response, if given)."""
        return "".join(
            e["delta"]
            for e in self.of("response.output_audio_transcript.delta")
            if response_id is None or e["response_id"] == response_id
        ).strip()
