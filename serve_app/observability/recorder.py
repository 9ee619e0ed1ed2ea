"""Metrics and turn logs, recorded by observing a session's engine events.

The turn code only announces what happened (``serve_app.engine.events``); this is the one
place that turns those announcements into Prometheus series and structured log lines. A
speculative reply that was dropped never reaches it (its events stayed behind the gate), so
it is never counted as a turn; its model work still shows, through ``StageMeasured``.
"""

from __future__ import annotations

import logging

from deployments.logs import log_event
from serve_app.engine.events import EngineEvent, ReplyDone, StageMeasured
from serve_app.observability import metrics

ProtocolName = str
"""The wire protocol a session speaks (``realtime``, ``flow``): the ``protocol`` label."""


class SessionRecorder:
    """Observes one session's engine events.

    Args:
        session_id: For log lines (never a metric label).
        protocol: The ``protocol`` label of the per-turn series.
    """

    def __init__(self, session_id: str, protocol: ProtocolName) -> None:
        self._session_id = session_id
        self._protocol = protocol

    async def observe(self, event: EngineEvent) -> None:
        """Record what ``event`` says (an ``EventSink``)."""
        if isinstance(event, StageMeasured):
            metrics.record(event.metric, event.value, **event.tags)
        elif isinstance(event, ReplyDone):
            self._turn_done(event)

    def _turn_done(self, done: ReplyDone) -> None:
        """Count the turn and log its line (the reply reached the client)."""
        metrics.count("voxray_turns", outcome=done.status, protocol=self._protocol)
        if done.status == "cancelled":
            metrics.count(
                "voxray_responses_cancelled", reason=done.reason or "unknown", protocol=self._protocol
            )
        first_audio_ms = done.timings.get("first_audio_ms")
        if first_audio_ms is not None and done.voice_turn:
            metrics.record(
                "voxray_voice_response_latency_seconds", first_audio_ms / 1000, protocol=self._protocol
            )
        fields = {
            "session_id": self._session_id,
            "protocol": self._protocol,
            "turn_id": done.response_id,
            "item_id": done.item.id,
            "outcome": done.status,
            "reason": done.reason,
            "error": done.error,
            "output_tokens": done.output_tokens,
            "audio_ms": done.item.audio_ms,
            "timings_ms": done.timings,
        }
        log_event("turn", fields)
        log_event(
            "turn_text",
            {"session_id": self._session_id, "turn_id": done.response_id, "reply": done.spoken_text},
            level=logging.DEBUG,
        )


def record_error(
    session_id: str | None, protocol: ProtocolName, error_type: str, code: str, message: str
) -> None:
    """Count an error sent to a client and log it (one structured line).

    Args:
        session_id: The session, if one was started.
        protocol: The ``protocol`` label.
        error_type: The error's type (``invalid_request_error``, ``server_error``, ...).
        code: Its code.
        message: What the client was told.
    """
    metrics.count("voxray_errors", type=error_type, code=code, protocol=protocol)
    fields = {
        "session_id": session_id,
        "protocol": protocol,
        "type": error_type,
        "code": code,
        "message": message,
    }
    log_event("error", fields)
