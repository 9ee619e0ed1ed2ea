"""``Connection.run`` end to end over a fake WebSocket and a fake Session (no server).

The fake socket behaves like Starlette's for what ``run`` uses: ``receive`` marks the client
disconnected on ``websocket.disconnect``, ``close`` marks the application side closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from serve_app.config import LimitsConfig
from serve_app.server import connection as connection_module
from serve_app.server.connection import Connection
from serve_app.server.limits import POLICY_VIOLATION, SERVICE_RESTART, CloseConnection

LIMITS = LimitsConfig()
RUN_BOUND_S = 3.0  # every run here must end well within this


class FakeWebSocket:
    """An accepted socket: client messages come from ``incoming``; sent text is recorded.

    Args:
        block_sends: ``send_text`` never returns (a client that stopped reading).
        block_close: ``close`` never returns (a peer that never answers the close).
    """

    def __init__(self, block_sends: bool = False, block_close: bool = False) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closes: list[tuple[int, str | None]] = []
        self.client_state = WebSocketState.CONNECTED
        self.application_state = WebSocketState.CONNECTED
        self._block_sends = block_sends
        self._block_close = block_close
        self.send_attempts = 0

    async def receive(self) -> dict[str, Any]:
        message = await self.incoming.get()
        if message["type"] == "websocket.disconnect":
            self.client_state = WebSocketState.DISCONNECTED
        return message

    async def send_text(self, text: str) -> None:
        assert self.application_state == WebSocketState.CONNECTED, "sent after close"
        self.send_attempts += 1
        if self._block_sends:
            await asyncio.Event().wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closes.append((code, reason))
        self.application_state = WebSocketState.DISCONNECTED
        if self._block_close:
            await asyncio.Event().wait()

    def say(self, text: str) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})


class FakeSession:
    """Greets on start, echoes each message as an event, and can raise on a given message."""

    id = "sess_fake"
    protocol = "fake"

    def __init__(self, emit: Any, raise_on: dict[str, BaseException] | None = None) -> None:
        self._emit = emit
        self._raise_on = raise_on or {}
        self.responding = False
        self.preset: dict[str, Any] | None = None
        self.received: list[str | bytes] = []
        self.closed = 0

    def closing_message(self, close: CloseConnection) -> list[dict[str, Any]]:
        return [close.error]

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        self.preset = preset
        await self._emit({"type": "session.created"})

    async def handle_message(self, data: str | bytes) -> None:
        self.received.append(data)
        if isinstance(data, str) and data in self._raise_on:
            raise self._raise_on[data]
        await self._emit({"type": "echo", "data": data if isinstance(data, str) else data.hex()})

    async def close(self) -> None:
        self.closed += 1


def types_of(ws: FakeWebSocket) -> list[str]:
    return [e["type"] for e in ws.sent]


async def started(ws: FakeWebSocket, conn: Connection, preset: dict[str, Any] | None = None) -> Any:
    """Start ``conn.run`` in a task and wait until the greeting went out."""
    session = FakeSession(conn.emit)
    task = asyncio.create_task(conn.run(session, preset))  # type: ignore[arg-type]
    for _ in range(200):
        if ws.sent or ws.send_attempts:
            break
        await asyncio.sleep(0.005)
    assert ws.sent or ws.send_attempts, "the session never started"
    return task, session


async def test_client_disconnect_ends_the_session() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, session = await started(ws, conn, preset={"instructions": "hi"})
    ws.say("hello")
    ws.leave()
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert session.preset == {"instructions": "hi"}
    assert session.received == ["hello"]
    assert types_of(ws) == ["session.created", "echo"]
    assert session.closed == 1
    assert ws.closes == []  # the client already closed: nothing to send
    assert conn.closing is None


async def test_binary_frames_reach_the_session_as_bytes() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, session = await started(ws, conn)
    ws.incoming.put_nowait({"type": "websocket.receive", "bytes": b"\x01\x02"})
    ws.leave()
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert session.received == [b"\x01\x02"]


async def test_events_go_out_in_order() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, _ = await started(ws, conn)
    for i in range(50):
        ws.say(f"m{i}")
    ws.leave()
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert [e["data"] for e in ws.sent[1:]] == [f"m{i}" for i in range(50)]


async def test_last_heard_moves_with_client_messages() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    conn.last_heard = conn.opened_at - 1000
    task, _ = await started(ws, conn)
    ws.say("x")
    ws.leave()
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert conn.last_heard >= conn.opened_at


async def test_close_raised_by_the_session_sends_its_error_then_closes() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    over = CloseConnection(POLICY_VIOLATION, "too_many_invalid_events", "Too many.", reason="too many")
    session = FakeSession(conn.emit, raise_on={"bad": over})
    task = asyncio.create_task(conn.run(session))  # type: ignore[arg-type]
    ws.say("fine")
    ws.say("bad")
    ws.say("never handled")
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert session.received == ["fine", "bad"]
    assert types_of(ws) == ["session.created", "echo", "error"]
    assert ws.sent[-1] == over.error
    assert ws.closes == [(POLICY_VIOLATION, "too many")]
    assert session.closed == 1
    assert conn.closing is over


async def test_end_from_outside_sends_the_error_then_closes() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, session = await started(ws, conn)
    restart = CloseConnection(SERVICE_RESTART, "server_shutting_down", "Restarting.", reason="restarting")
    conn.end(restart)
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert types_of(ws) == ["session.created", "error"]
    assert ws.sent[-1]["error"]["code"] == "server_shutting_down"
    assert ws.closes == [(SERVICE_RESTART, "restarting")]
    assert session.closed == 1


async def test_end_before_run_ends_it_at_once() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    conn.end(CloseConnection(POLICY_VIOLATION, "api_key_revoked", "Revoked."))
    await asyncio.wait_for(conn.run(FakeSession(conn.emit)), RUN_BOUND_S)  # type: ignore[arg-type]
    assert types_of(ws)[-1] == "error"
    assert ws.closes == [(POLICY_VIOLATION, "Revoked.")]


async def test_writer_failure_ends_the_run() -> None:
    ws = FakeWebSocket()

    async def broken(text: str) -> None:
        raise ConnectionResetError("peer gone")

    ws.send_text = broken  # type: ignore[method-assign]
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    session = FakeSession(conn.emit)
    await asyncio.wait_for(conn.run(session), RUN_BOUND_S)  # type: ignore[arg-type]
    assert session.closed == 1
    assert ws.closes == [(1000, "")]


async def test_client_not_reading_cannot_hold_the_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "DRAIN_S", 0.05)
    monkeypatch.setattr(connection_module, "CLOSE_S", 0.1)
    ws = FakeWebSocket(block_sends=True, block_close=True)
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, session = await started(ws, conn)
    assert ws.sent == [] and ws.send_attempts == 1  # the greeting is stuck in send_text
    conn.end(CloseConnection(POLICY_VIOLATION, "client_not_reading", "Not reading.", reason="not reading"))
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert session.closed == 1
    assert ws.closes == [(POLICY_VIOLATION, "not reading")]


async def test_long_stalled_client_skips_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client stalled over a second gets no drain (``DRAIN_S`` left long to show it is skipped)."""
    monkeypatch.setattr(connection_module, "DRAIN_S", 30.0)
    monkeypatch.setattr(connection_module, "CLOSE_S", 0.1)
    ws = FakeWebSocket(block_sends=True)
    conn = Connection(ws, LIMITS)  # type: ignore[arg-type]
    task, _ = await started(ws, conn)

    real = connection_module.time

    class Later:
        """The module's clock, 10 s on: the greeting has now been stuck for 10 s."""

        @staticmethod
        def monotonic() -> float:
            return real.monotonic() + 10.0

    monkeypatch.setattr(connection_module, "time", Later)
    assert conn.check(Later.monotonic()) is None  # 10 s < send_timeout_s
    conn.end(CloseConnection(POLICY_VIOLATION, "client_not_reading", "Not reading."))
    await asyncio.wait_for(task, RUN_BOUND_S)
    assert ws.closes == [(POLICY_VIOLATION, "Not reading.")]
    assert conn.queued_bytes == 0  # the error event was not queued behind the stuck one
