"""One accepted WebSocket: its protocol session, its bounded outbound queue, and how it ends.

The session is any wire protocol's adapter (:class:`WireSession`): the Connection only moves
messages. Outgoing messages (JSON text, or binary audio for protocols that send it) go
through one queue, bounded in bytes, and a single writer task, so messages from concurrent
tasks keep their order and a slow client applies back-pressure instead of growing memory. A
client that stops reading altogether is noticed by :meth:`Connection.check` (the Ingress
runs it every second for every connection) and cut off, as are idle and over-long sessions.
Every deliberate end tells the client why in its protocol's words, then closes with a code
and a reason (see ``serve_app.server.limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from starlette.websockets import WebSocket, WebSocketState

from serve_app.config import LimitsConfig
from serve_app.server.limits import POLICY_VIOLATION, CloseConnection

logger = logging.getLogger("voxray")

DRAIN_S = 1.0  # how long queued events may take to go out when a session ends
CLOSE_S = 30.0  # outer bound on a close; the WebSocket library itself aborts after its close_timeout (10 s)


Outbound = str | bytes
"""One WebSocket message: text (JSON) or binary."""

Item = TypeVar("Item")


class WireSession(Protocol):
    """What a Connection runs: one protocol adapter's session."""

    id: str
    protocol: str

    @property
    def responding(self) -> bool:
        """Whether a reply is being generated or waited for (not idle)."""
        ...

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        """Greet the client (``preset``: settings a client secret carries)."""
        ...

    async def handle_message(self, raw: str | bytes) -> None:
        """Act on one client message (raises ``CloseConnection`` to end the connection)."""
        ...

    async def close(self) -> None:
        """Cancel everything in flight."""
        ...

    def closing_message(self, close: CloseConnection) -> list[dict[str, Any]]:
        """The protocol's last words before the server closes with ``close`` (counted as an error)."""
        ...


class OutboundQueue(Generic[Item]):
    """Serialized messages waiting for one client, bounded by their total size.

    ``put`` waits while the queue is over ``max_bytes`` (one event larger than the bound
    still goes through alone), which pauses whatever produces events for this client.

    Args:
        max_bytes: Bound on the queued events' total length.
        size: An item's size in bytes: ``len`` for WebSocket messages; a gRPC stream's
            protobuf messages pass their encoded size.
    """

    def __init__(self, max_bytes: int, size: Callable[[Item], int] = len) -> None:  # type: ignore[assignment]
        self._max_bytes = max_bytes
        self._size = size
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()  # set when items wait
        self._room = asyncio.Event()  # set when a put may fit
        self._in_flight = False
        self._last_progress = time.monotonic()

    @property
    def queued_bytes(self) -> int:
        """Total length of the events waiting."""
        return self._bytes

    async def put(self, text: Item) -> None:
        """Queue one event, waiting for room first."""
        while not self._fits(self._size(text)):
            self._room.clear()
            await self._room.wait()
        self._append(text)

    def _fits(self, size: int) -> bool:
        return not self._items or self._bytes + size <= self._max_bytes

    def put_now(self, text: Item) -> None:
        """Queue one event without waiting (the last word before a close; may exceed the bound)."""
        self._append(text)

    def _append(self, text: Item) -> None:
        if not self._items and not self._in_flight:
            self._last_progress = time.monotonic()  # idle time is not stalling
        self._items.append(text)
        self._bytes += self._size(text)
        self._ready.set()

    def withdraw(self, unwanted: Callable[[Item], bool]) -> int:
        """Drop the waiting items ``unwanted`` picks (a stopped reply's audio); returns how many."""
        kept = deque(item for item in self._items if not unwanted(item))
        dropped = len(self._items) - len(kept)
        if dropped:
            self._items = kept
            self._bytes = sum(self._size(item) for item in kept)
            self._room.set()
        return dropped

    async def get(self) -> Item:
        """Take the next event; call :meth:`sent` once it is on the wire."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        text = self._items.popleft()
        self._bytes -= self._size(text)
        self._in_flight = True
        self._room.set()
        return text

    def sent(self) -> None:
        """The event taken last has been written to the socket."""
        self._in_flight = False
        self._last_progress = time.monotonic()

    def empty(self) -> bool:
        """Whether nothing waits or is being written."""
        return not self._items and not self._in_flight

    def stalled_s(self, now: float) -> float:
        """Seconds since the client last took an event while events wait (0 if none wait)."""
        return 0.0 if self.empty() else max(0.0, now - self._last_progress)


def broken_limit(
    limits: LimitsConfig,
    outbound: OutboundQueue[Any],
    now: float,
    opened_at: float,
    last_heard: float,
    responding: bool,
) -> CloseConnection | None:
    """The limit a client's session breaks at ``now``, if any: not reading, too long, idle.

    Shared by WebSocket connections and gRPC streams, so both end for the same reasons.

    Args:
        limits: The limits section of the app config.
        outbound: The client's outbound queue.
        now: ``time.monotonic()``.
        opened_at: When the session opened.
        last_heard: When the client last sent something.
        responding: Whether a reply is in progress (a busy session is not idle).
    """
    if outbound.stalled_s(now) > limits.send_timeout_s:
        return CloseConnection(
            POLICY_VIOLATION,
            "client_not_reading",
            f"The client took no events for {limits.send_timeout_s:g} s; closing the connection.",
            reason="client is not reading",
        )
    if now - opened_at > limits.max_session_s:
        return CloseConnection(
            POLICY_VIOLATION,
            "session_expired",
            f"Your session hit the maximum duration of {limits.max_session_s:g} seconds.",
            reason="maximum session duration reached",
        )
    if not responding and outbound.empty() and now - last_heard > limits.idle_timeout_s:
        return CloseConnection(
            POLICY_VIOLATION,
            "idle_timeout",
            f"No client events for {limits.idle_timeout_s:g} s; closing the idle session.",
            reason="idle timeout",
        )
    return None


class Connection:
    """Runs one protocol session over one accepted WebSocket until either side ends it.

    Args:
        websocket: The accepted socket.
        limits: The limits section of the app config.
        key_id: The API key the client authenticated with, if any.
    """

    def __init__(self, websocket: WebSocket, limits: LimitsConfig, key_id: str | None = None) -> None:
        self.websocket = websocket
        self.key_id = key_id
        self.opened_at = time.monotonic()
        self.last_heard = self.opened_at
        self.session: WireSession | None = None
        self._limits = limits
        self._outbound: OutboundQueue[Outbound] = OutboundQueue(limits.max_outbound_bytes)
        self._ending: CloseConnection | None = None
        self._ended = asyncio.Event()

    @property
    def queued_bytes(self) -> int:
        """Serialized events waiting for this client."""
        return self._outbound.queued_bytes

    @property
    def closing(self) -> CloseConnection | None:
        """Why the server is ending this connection, once it is."""
        return self._ending

    async def emit(self, event: dict[str, Any]) -> None:
        """Queue one JSON message for the client (waits while the client is behind)."""
        await self._outbound.put(json.dumps(event))

    async def send_bytes(self, data: bytes) -> None:
        """Queue one binary message for the client (waits while the client is behind)."""
        await self._outbound.put(data)

    def end(self, close: CloseConnection) -> None:
        """End the connection with ``close``'s error event and close code (first call wins)."""
        if self._ending is None:
            self._ending = close
            self._ended.set()

    def end_soon(self, after_s: float) -> None:
        """Close normally (1000) in ``after_s`` seconds, unless the client closes first."""
        asyncio.get_running_loop().call_later(after_s, self._ended.set)

    def check(self, now: float) -> CloseConnection | None:
        """The limit this connection breaks at ``now``, if any (idle, too long, not reading)."""
        responding = self.session is not None and self.session.responding
        return broken_limit(self._limits, self._outbound, now, self.opened_at, self.last_heard, responding)

    async def run(self, session: WireSession, preset: dict[str, Any] | None = None) -> None:
        """Serve ``session`` until the client leaves, a limit ends it, or :meth:`end` is called.

        Args:
            session: The session, built with :meth:`emit` as its emit function.
            preset: Session settings to apply before ``session.created`` (a client secret's).
        """
        self.session = session
        writer = asyncio.create_task(self._write())
        receiver = asyncio.create_task(self._receive(session, preset))
        ended = asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait({writer, receiver, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiver, ended):
                task.cancel()
            await asyncio.gather(receiver, ended, return_exceptions=True)
            await session.close()
            await self._finish(writer)

    async def _receive(self, session: WireSession, preset: dict[str, Any] | None) -> None:
        await session.start(preset)
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_heard = time.monotonic()
            data = message.get("text")
            try:
                await session.handle_message(data if data is not None else message.get("bytes") or b"")
            except CloseConnection as close:
                self.end(close)
                return

    async def _write(self) -> None:
        while True:
            message = await self._outbound.get()
            if isinstance(message, bytes):
                await self.websocket.send_bytes(message)
            else:
                await self.websocket.send_text(message)
            self._outbound.sent()

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        """Send what is queued (and the closing error), then close with the right code."""
        close = self._ending
        stalled = self._outbound.stalled_s(time.monotonic()) > 1.0
        last_words = self.session.closing_message(close) if close is not None and self.session else []
        if not stalled:
            for message in last_words:
                self._outbound.put_now(json.dumps(message))
        if not stalled:
            deadline = time.monotonic() + DRAIN_S
            while not self._outbound.empty() and not writer.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if self.websocket.client_state != WebSocketState.CONNECTED:
            return
        code, reason = (close.code, close.reason) if close is not None else (1000, "")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_S)
