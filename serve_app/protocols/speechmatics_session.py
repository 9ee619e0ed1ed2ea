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
