"""Connection limits without a socket: the outbound queue, the invalid-event budget, close
reasons and ``Connection.check``. Clocks are fakes; ``Connection.run`` is in
``test_connection_run.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.config import LimitsConfig
from serve_app.server import connection as connection_module
from serve_app.server.connection import Connection, OutboundQueue
from serve_app.server.limits import MAX_REASON_BYTES, POLICY_VIOLATION, CloseConnection, InvalidEventBudget


class FakeClock:
    """A ``time`` module stand-in whose ``monotonic`` only moves when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replaces the clock of ``serve_app.server.connection`` only (asyncio keeps the real one)."""
    fake = FakeClock()
    monkeypatch.setattr(connection_module, "time", fake)
    return fake


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- OutboundQueue ---------------------------------------------------------------------------


async def test_queue_is_fifo() -> None:
    queue = OutboundQueue(1000)
    for text in ["a", "bb", "ccc"]:
        await queue.put(text)
    queue.put_now("dddd")
    assert queue.queued_bytes == 10
    assert [await queue.get() for _ in range(4)] == ["a", "bb", "ccc", "dddd"]
    assert queue.queued_bytes == 0


async def test_get_waits_for_a_put() -> None:
    queue = OutboundQueue(1000)
    getter = asyncio.create_task(queue.get())
    await settle()
    assert not getter.done()
    await queue.put("late")
    assert await asyncio.wait_for(getter, 1) == "late"


async def test_put_waits_over_the_bound_and_resumes_when_get_frees_room() -> None:
    queue = OutboundQueue(10)
    await queue.put("x" * 6)
    await queue.put("y" * 4)  # exactly at the bound
    blocked = asyncio.create_task(queue.put("z" * 3))
    await settle()
    assert not blocked.done()
    assert queue.queued_bytes == 10

    assert await queue.get() == "x" * 6
    await asyncio.wait_for(blocked, 1)
    assert queue.queued_bytes == 7
    assert [await queue.get(), await queue.get()] == ["y" * 4, "z" * 3]


async def test_waiting_put_stays_blocked_while_still_too_big() -> None:
    queue = OutboundQueue(10)
    for text in ["a" * 4, "b" * 4]:
        await queue.put(text)
    blocked = asyncio.create_task(queue.put("c" * 7))
    await settle()
    await queue.get()  # 4 bytes left: 4 + 7 is still over
    await settle()
    assert not blocked.done()
    await queue.get()
    await asyncio.wait_for(blocked, 1)
    assert await queue.get() == "c" * 7


async def test_event_larger_than_the_bound_goes_through_alone() -> None:
    queue = OutboundQueue(10)
    await asyncio.wait_for(queue.put("h" * 50), 1)
    assert queue.queued_bytes == 50
    blocked = asyncio.create_task(queue.put("i"))
    await settle()
    assert not blocked.done()
    assert await queue.get() == "h" * 50
    await asyncio.wait_for(blocked, 1)


async def test_large_event_waits_behind_queued_ones() -> None:
    queue = OutboundQueue(10)
    await queue.put("a")
    blocked = asyncio.create_task(queue.put("h" * 50))
    await settle()
    assert not blocked.done()
    assert await queue.get() == "a"
    await asyncio.wait_for(blocked, 1)


async def test_put_now_never_waits() -> None:
    queue = OutboundQueue(10)
    await queue.put("x" * 10)
    queue.put_now("closing" * 20)  # synchronous: it cannot wait
    assert queue.queued_bytes == 150
    assert await queue.get() == "x" * 10


async def test_empty_counts_the_event_being_written() -> None:
    queue = OutboundQueue(100)
    assert queue.empty()
    await queue.put("a")
    assert not queue.empty()
    await queue.get()
    assert not queue.empty()  # taken, not yet on the wire
    queue.sent()
    assert queue.empty()


async def test_stalled_is_zero_when_nothing_waits(clock: FakeClock) -> None:
    queue = OutboundQueue(100)
    clock.advance(500)
    assert queue.stalled_s(clock.now) == 0.0


async def test_stalled_grows_until_sent_and_idle_time_is_not_stalling(clock: FakeClock) -> None:
    queue = OutboundQueue(100)
    clock.advance(100)  # idle before the put
    await queue.put("a")
    assert queue.stalled_s(clock.now) == 0.0
    clock.advance(5)
    assert queue.stalled_s(clock.now) == 5.0
    await queue.get()  # being written: still stalled
    clock.advance(3)
    assert queue.stalled_s(clock.now) == 8.0
    queue.sent()
    assert queue.stalled_s(clock.now) == 0.0
    clock.advance(60)  # idle again
    queue.put_now("b")
    clock.advance(1)
    assert queue.stalled_s(clock.now) == 1.0


async def test_stalled_resets_on_each_sent_event(clock: FakeClock) -> None:
    queue = OutboundQueue(100)
    await queue.put("a")
    await queue.put("b")
    clock.advance(4)
    await queue.get()
    queue.sent()  # progress: "b" still waits, from now
    clock.advance(2)
    assert queue.stalled_s(clock.now) == 2.0


async def test_put_behind_a_stuck_write_does_not_reset_the_stall(clock: FakeClock) -> None:
    queue = OutboundQueue(100)
    await queue.put("a")
    await queue.get()  # the writer is stuck sending "a"
    clock.advance(7)
    await queue.put("b")
    assert queue.stalled_s(clock.now) == 7.0


# -- InvalidEventBudget ----------------------------------------------------------------------


def test_budget_closes_on_the_event_past_the_limit() -> None:
    now = [0.0]
    budget = InvalidEventBudget(3, clock=lambda: now[0])
    for t in [0.0, 10.0, 59.0]:
        now[0] = t
        budget.spend()
    now[0] = 59.5
    with pytest.raises(CloseConnection) as info:
        budget.spend()
    assert info.value.code == POLICY_VIOLATION == 1008
    assert info.value.error["type"] == "error"
    assert info.value.error["error"]["code"] == "too_many_invalid_events"
    assert info.value.reason == "too many invalid events"


def test_budget_over_more_than_a_minute_never_closes() -> None:
    now = [0.0]
    budget = InvalidEventBudget(3, clock=lambda: now[0])
    for i in range(40):
        now[0] = i * 20.5  # at most 3 in any 60 s
        budget.spend()


def test_budget_window_slides() -> None:
    now = [0.0]
    budget = InvalidEventBudget(2, clock=lambda: now[0])
    for t in [0.0, 30.0, 60.0]:  # the event at 0 is a full minute old at 60
        now[0] = t
        budget.spend()
    now[0] = 61.0
    with pytest.raises(CloseConnection):
        budget.spend()  # 30, 60 and 61 are within a minute


# -- CloseConnection -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["é" * 100, "a" + "€" * 50, "😀" * 40, "x" * 200, "ok"])
def test_reason_fits_a_close_frame_without_breaking_characters(text: str) -> None:
    close = CloseConnection(POLICY_VIOLATION, "some_code", text)
    raw = close.reason.encode()
    assert len(raw) <= MAX_REASON_BYTES
    assert text.startswith(close.reason)
    assert len(raw) > MAX_REASON_BYTES - 4 or close.reason == text  # cut no shorter than needed
    assert close.error["error"]["message"] == text  # the event keeps the whole message


def test_explicit_reason_replaces_the_message_in_the_close_frame() -> None:
    close = CloseConnection(1013, "session_limit_reached", "A long message.", reason="at capacity")
    assert (close.code, close.reason) == (1013, "at capacity")
    assert close.error["error"]["code"] == "session_limit_reached"
    assert close.error["error"]["type"] == "invalid_request_error"


# -- Connection.check ------------------------------------------------------------------------


class FakeSession:
    def __init__(self, responding: bool = False) -> None:
        self.responding = responding


LIMITS = LimitsConfig(max_session_s=100.0, idle_timeout_s=20.0, send_timeout_s=5.0)


def new_connection(clock: FakeClock, session: Any = None) -> Connection:
    conn = Connection(object(), LIMITS)  # type: ignore[arg-type]
    conn.session = session if session is not None else FakeSession()
    assert conn.opened_at == conn.last_heard == clock.now
    return conn


def error_code(close: CloseConnection | None) -> str | None:
    if close is None:
        return None
    assert close.code == POLICY_VIOLATION
    return str(close.error["error"]["code"])


def test_fresh_connection_breaks_nothing(clock: FakeClock) -> None:
    conn = new_connection(clock)
    assert conn.check(clock.now) is None
    assert conn.check(clock.now + 19.9) is None


def test_session_expires_after_max_session_s_even_when_busy(clock: FakeClock) -> None:
    conn = new_connection(clock, FakeSession(responding=True))
    conn.last_heard = conn.opened_at + 99
    assert conn.check(conn.opened_at + 100) is None
    close = conn.check(conn.opened_at + 100.5)
    assert error_code(close) == "session_expired"
    assert close is not None and close.reason == "maximum session duration reached"


def test_idle_timeout_counts_from_the_last_client_event(clock: FakeClock) -> None:
    conn = new_connection(clock)
    conn.last_heard = conn.opened_at + 50
    assert conn.check(conn.opened_at + 70) is None
    assert error_code(conn.check(conn.opened_at + 70.5)) == "idle_timeout"


def test_no_idle_timeout_while_responding(clock: FakeClock) -> None:
    session = FakeSession(responding=True)
    conn = new_connection(clock, session)
    assert conn.check(conn.opened_at + 50) is None
    session.responding = False
    assert error_code(conn.check(conn.opened_at + 50)) == "idle_timeout"


async def test_no_idle_timeout_while_events_are_queued(clock: FakeClock) -> None:
    conn = new_connection(clock)
    clock.advance(30)  # silent client, nothing queued yet
    assert error_code(conn.check(clock.now + 1)) == "idle_timeout"
    await conn.emit({"type": "response.done"})
    assert conn.queued_bytes > 0
    assert conn.check(clock.now + 1) is None  # queued, and not yet stalled long enough


async def test_client_not_reading(clock: FakeClock) -> None:
    conn = new_connection(clock)
    await conn.emit({"type": "response.output_audio.delta", "delta": "AAAA"})
    conn.last_heard = clock.now + 100  # the client keeps talking but never reads
    assert conn.check(clock.now + 5) is None
    close = conn.check(clock.now + 5.5)
    assert error_code(close) == "client_not_reading"
    assert close is not None and close.reason == "client is not reading"


async def test_slow_but_reading_client_is_not_cut_off(clock: FakeClock) -> None:
    conn = new_connection(clock)
    for _ in range(10):  # each event takes 4 s to go out: slower than real time, never stalled 5 s
        await conn.emit({"type": "response.output_audio.delta", "delta": "AAAA"})
        await conn._outbound.get()
        clock.advance(4)
        conn.last_heard = clock.now
        assert conn.check(clock.now) is None
        conn._outbound.sent()
    assert conn.check(clock.now + 4) is None


def test_end_is_first_call_wins(clock: FakeClock) -> None:
    conn = new_connection(clock)
    first = CloseConnection(1012, "server_shutting_down", "restarting")
    conn.end(first)
    conn.end(CloseConnection(POLICY_VIOLATION, "idle_timeout", "idle"))
    assert conn.closing is first
