"""What the two Speechmatics protocols' sessions share (Flow at ``/v1/flow``, RT at ``/v2``).

Both speak JSON messages named by a ``message`` field, end a session with one
``Error{type, reason}`` (their clients stop on it), report problems that do not end it as
``Warning{type, reason}``, and finish in the background after the client's last audio
(``AudioEnded`` / ``EndOfStream``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from serve_app.observability.recorder import record_error
from serve_app.server.limits import CloseConnection

Emit = Callable[[dict[str, Any]], Awaitable[None]]
EndSoon = Callable[[float], None]


# Why voxray closed a connection (CloseConnection.error_code) → the Speechmatics error type;
# the server's own failures take each protocol's word for them (see close_error_type).
_CLOSE_TYPES = {
    "idle_timeout": "idle_timeout",
    "session_expired": "session_timeout",
    "missing_api_key": "not_authorised",
    "invalid_api_key": "not_authorised",
    "api_key_revoked": "not_authorised",
    "invalid_client_secret": "not_authorised",
    "client_secret_expired": "not_authorised",
    "client_secret_used": "not_authorised",
    "origin_not_allowed": "not_allowed",
    "loopback_only": "not_allowed",
    "session_limit_reached": "quota_exceeded",
    "too_many_invalid_events": "protocol_error",
    "client_not_reading": "protocol_error",
}
_SERVER_SIDE = frozenset({"server_shutting_down", "access_check_unavailable"})


def close_error_type(error_code: str, server_error: str) -> Any:
    """The error type that tells a Speechmatics client why voxray closed its connection.

    Args:
        error_code: ``CloseConnection.error_code``.
        server_error: This protocol's type for a failure on the server's side (Flow:
            ``internal_error``; RT: ``job_error``).
    """
    if error_code in _SERVER_SIDE:
        return server_error
    return _CLOSE_TYPES.get(error_code, "unknown_error")


class SpeechmaticsProtocolError(Exception):
    """A client message voxray cannot accept: the session ends with an ``Error``.

    Attributes:
        type: The protocol's error type (``protocol_error``, ``invalid_config``, ...).
        reason: What was wrong and how to fix it.
    """

    def __init__(self, reason: str, type: str = "protocol_error") -> None:
        super().__init__(reason)
        self.type = type
        self.reason = reason


class SpeechmaticsSession:
    """Lifecycle shared by the Speechmatics adapters; subclasses set ``protocol``.

    Subclasses set ``id``, ``engine`` (an object with ``async close()``, or ``None``),
    ``_emit``, ``_finishing`` (the task finishing the session after the last audio, or
    ``None``) and ``_ended`` (the closing message was sent), and implement ``refusal``.
    """

    protocol: ClassVar[str]
    id: str
    engine: Any
    _emit: Emit
    _finishing: asyncio.Task[None] | None
    _ended: bool

    @staticmethod
    def refusal(close: CloseConnection) -> list[dict[str, Any]]:
        """The messages that explain a close to this protocol's client."""
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel everything in flight; the connection is gone."""
        if self._finishing is not None:
            self._finishing.cancel()
            await asyncio.gather(self._finishing, return_exceptions=True)
        if self.engine is not None:
            await self.engine.close()

    def closing_message(self, close: CloseConnection) -> list[dict[str, Any]]:
        """What to send before the server closes the connection (the error is counted)."""
        record_error(self.id, self.protocol, close.error_type, close.error_code, close.message)
        return [] if self._ended else self.refusal(close)

    async def _send(self, message: dict[str, Any]) -> None:
        """Send a message; ``Error`` and ``Warning`` are counted in the error metrics."""
        if message["message"] in ("Error", "Warning"):
            record_error(
                self.id, self.protocol, message["message"].lower(), message["type"], message["reason"]
            )
        await self._emit(message)
