"""Ending a connection on purpose: close codes, and the budget of invalid client events.

Every way voxray ends a session itself goes through :class:`CloseConnection`, which
carries the WebSocket close code and reason, and the ``error`` event that explains it
to clients that read events rather than close frames. The codes (RFC 6455):

* 1008 policy violation: a limit was broken (idle, too long, not reading, too many invalid
  events, revoked key) or access was refused (no key, wrong key, origin). Do not retry as is.
* 1012 service restart: this Ingress replica is shutting down. Reconnect now.
* 1013 try again later: at capacity (sessions per replica or per key). Retry with backoff.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from serve_app.protocols.realtime import wire as rt

POLICY_VIOLATION = 1008
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 123  # a close frame's reason must fit in 123 bytes of UTF-8


class CloseConnection(Exception):
    """The connection must end with ``code``; each protocol tells its client why first.

    Attributes:
        code: WebSocket close code (see the module docstring).
        reason: Short close reason, cut to what a close frame can carry.
        error_code: Why, as a stable code (``idle_timeout``, ``session_limit_reached``, ...).
        error_type: ``invalid_request_error`` (the client's doing) or ``server_error``.
        message: Why, in words.
        error: The OpenAI Realtime ``error`` event saying so.
    """

    def __init__(
        self,
        code: int,
        error_code: str,
        message: str,
        *,
        reason: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = (reason or message).encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        self.error_code = error_code
        self.error_type = error_type
        self.message = message
        self.error: dict[str, Any] = rt.error_event(error_type, error_code, message)
        self._args = (code, error_code, message)
        self._kwargs = {"reason": reason, "error_type": error_type}

    def __reduce__(self) -> Any:
        # Exceptions pickle as ``cls(*self.args)`` by default, which loses the keyword fields.
        return (_rebuild, (type(self), self._args, self._kwargs))


def _rebuild(cls: type[CloseConnection], args: tuple[Any, ...], kwargs: dict[str, Any]) -> CloseConnection:
    return cls(*args, **kwargs)


class InvalidEventBudget:
    """Counts a client's invalid events over a sliding minute.

    A client that keeps sending garbage costs a parse and an ``error`` event each time;
    past the budget it is cut off instead of being answered forever.

    Args:
        per_minute: Invalid events tolerated within any 60 s window.
        clock: Monotonic clock (seconds); injectable for tests.
    """

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Any = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._times: deque[float] = deque()

    def spend(self) -> None:
        """Record one invalid event.

        Raises:
            CloseConnection: 1008 when this event is over the budget.
        """
        now = self._clock()
        self._times.append(now)
        while self._times and self._times[0] <= now - self.WINDOW_S:
            self._times.popleft()
        if len(self._times) > self._limit:
            raise CloseConnection(
                POLICY_VIOLATION,
                "too_many_invalid_events",
                f"More than {self._limit} invalid events within a minute; closing the connection.",
                reason="too many invalid events",
            )
