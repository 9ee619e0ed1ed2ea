"""The Realtime protocol's client errors: each travels back as an OpenAI-style ``error`` event."""

from __future__ import annotations

from typing import Any

from serve_app.protocols.realtime.server_events import error_event


class ProtocolError(Exception):
    """A client event the server cannot accept; travels back to the client as an ``error`` event.

    Attributes:
        code: OpenAI-style error code, e.g. ``"invalid_value"``.
        message: Human-readable explanation.
        event_id: The offending client event's ``event_id``, when it could be read.
        param: Dotted path of the offending parameter, e.g. ``"session.audio.input.format.type"``.
        type: OpenAI error type; ``"invalid_request_error"`` for everything the client got wrong.
    """

    def __init__(
        self,
        code: str,
        message: str,
        event_id: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id
        self.param = param
        self.type = type

    def to_event(self) -> dict[str, Any]:
        """Returns the ``error`` server event describing this error."""
        return error_event(self.type, self.code, self.message, param=self.param, event_id=self.event_id)
