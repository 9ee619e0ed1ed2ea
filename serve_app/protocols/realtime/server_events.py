"""OpenAI Realtime (GA) server events: builders returning plain dicts ready for ``json.dumps``.

Every builder stamps a fresh ``event_id``. Their output is checked against the official
``openai.types.realtime`` models in ``tests/unit/test_protocol.py``, so the SDK and any client
written against OpenAI's schema read them unchanged.

Items can be given as wire dicts or as any object with ``id``, ``role``, ``text``, ``modality``
and ``status`` attributes (:class:`ItemLike`, e.g. ``serve_app.engine.conversation.Item``).

Per-stage timings of a response travel in ``response.metadata`` (the GA schema's string-to-string
map) as ``{"voxray.<name>": "<ms>"}``. The SDK's models would also accept extra keys, but metadata
is the one place every typed client is guaranteed to accept and keep.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

# fmt: off
__all__ = [
    "PCM_24K", "TIMING_PREFIX", "Event", "ItemLike", "SessionLike", "conversation_item_added",
    "conversation_item_deleted", "conversation_item_done", "conversation_item_truncated", "error_event",
    "input_audio_buffer_cleared", "input_audio_buffer_committed", "item_to_wire", "message_item", "new_id",
    "parse_timings", "response_content_part_added", "response_content_part_done", "response_created",
    "response_done", "response_object", "response_output_audio_delta", "response_output_audio_done",
    "response_output_item_added", "response_output_item_done", "response_transcript_delta",
    "response_transcript_done", "response_usage", "session_created", "session_updated", "speech_started",
    "speech_stopped", "timings_metadata", "transcription_completed", "transcription_delta",
    "transcription_failed"
]
# fmt: on

Event = dict[str, Any]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
PCM_24K: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
TIMING_PREFIX = "voxray."


class ItemLike(Protocol):
    """A conversation message as the session keeps it."""

    id: str
    role: str
    text: str
    modality: str  # "audio" | "text"
    status: str  # "completed" | "incomplete" | "in_progress"


class SessionLike(Protocol):
    """Anything that renders the wire session object (``SessionState``)."""

    def to_wire(self) -> dict[str, Any]: ...


def new_id(prefix: str) -> str:
    """Returns ``"<prefix>_"`` plus 20 random hex digits, e.g. ``new_id("item")``."""
    return f"{prefix}_{secrets.token_hex(10)}"


def _event(type_: str, **fields: Any) -> Event:
    return {"type": type_, "event_id": new_id("event"), **fields}


# --- session, errors, input buffer -----------------------------------------------------------


def session_created(session: SessionLike | Mapping[str, Any]) -> Event:
    """``session.created`` for a ``SessionState`` (or its ``to_wire()`` dict)."""
    wire = dict(session) if isinstance(session, Mapping) else session.to_wire()
    return _event("session.created", session=wire)


def session_updated(session: SessionLike | Mapping[str, Any]) -> Event:
    """``session.updated`` for a ``SessionState`` (or its ``to_wire()`` dict)."""
    wire = dict(session) if isinstance(session, Mapping) else session.to_wire()
    return _event("session.updated", session=wire)


def error_event(
    type: str, code: str | None, message: str, *, param: str | None = None, event_id: str | None = None
) -> Event:
    """``error``: ``type`` is e.g. ``invalid_request_error`` or ``server_error``; ``event_id``
    names the client event that caused it, if any."""
    error = {"type": type, "code": code, "message": message, "param": param, "event_id": event_id}
    return _event("error", error=error)


def speech_started(audio_start_ms: int, item_id: str) -> Event:
    """``input_audio_buffer.speech_started``; ``item_id`` is the user item the speech will become."""
    return _event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> Event:
    """``input_audio_buffer.speech_stopped``."""
    return _event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None = None) -> Event:
    """``input_audio_buffer.committed``."""
    return _event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def input_audio_buffer_cleared() -> Event:
    """``input_audio_buffer.cleared``."""
    return _event("input_audio_buffer.cleared")


# --- conversation items ----------------------------------------------------------------------


def message_item(
    item_id: str, role: str, content: Sequence[Mapping[str, Any]], status: ItemStatus = "completed"
) -> dict[str, Any]:
    """A ``message`` item as it appears in item and response events."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": [dict(part) for part in content],
    }


def item_to_wire(item: ItemLike | Mapping[str, Any]) -> dict[str, Any]:
    """The wire form of a conversation item (a dict passes through).

    User audio becomes ``input_audio`` with its transcript (``null`` until transcribed), user and
    system text ``input_text``, assistant speech ``output_audio`` with its transcript, assistant
    text ``output_text``. An assistant item still empty and in progress has no content yet.
    """
    if isinstance(item, Mapping):
        return dict(item)
    status: Any = item.status
    text = item.text or (None if status == "in_progress" else "")
    if item.role == "assistant":
        if status == "in_progress" and not item.text:
            parts: list[dict[str, Any]] = []
        elif item.modality == "audio":
            parts = [{"type": "output_audio", "transcript": text}]
        else:
            parts = [{"type": "output_text", "text": item.text}]
    elif item.role == "user" and item.modality == "audio":
        parts = [{"type": "input_audio", "transcript": text}]
    else:
        parts = [{"type": "input_text", "text": item.text}]
    return message_item(item.id, item.role, parts, status)


def conversation_item_added(item: ItemLike | Mapping[str, Any], previous_item_id: str | None = None) -> Event:
    """``conversation.item.added``."""
    return _event("conversation.item.added", previous_item_id=previous_item_id, item=item_to_wire(item))


def conversation_item_done(item: ItemLike | Mapping[str, Any], previous_item_id: str | None = None) -> Event:
    """``conversation.item.done``."""
    return _event("conversation.item.done", previous_item_id=previous_item_id, item=item_to_wire(item))


def conversation_item_deleted(item_id: str) -> Event:
    """``conversation.item.deleted``."""
    return _event("conversation.item.deleted", item_id=item_id)


def conversation_item_truncated(item_id: str, content_index: int, audio_end_ms: int) -> Event:
    """``conversation.item.truncated``."""
    fields = {"item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms}
    return _event("conversation.item.truncated", **fields)


_TRANSCRIPTION = "conversation.item.input_audio_transcription"


def transcription_delta(item_id: str, delta: str, content_index: int = 0) -> Event:
    """``conversation.item.input_audio_transcription.delta``."""
    return _event(f"{_TRANSCRIPTION}.delta", item_id=item_id, content_index=content_index, delta=delta)


def transcription_completed(
    item_id: str, transcript: str, audio_seconds: float, content_index: int = 0
) -> Event:
    """``conversation.item.input_audio_transcription.completed``; usage is the audio's duration."""
    usage = {"type": "duration", "seconds": round(float(audio_seconds), 3)}
    fields = {"item_id": item_id, "content_index": content_index, "transcript": transcript, "usage": usage}
    return _event(f"{_TRANSCRIPTION}.completed", **fields)


def transcription_segment(
    item_id: str, text: str, speaker: str, start_s: float, end_s: float, content_index: int = 0
) -> Event:
    """``conversation.item.input_audio_transcription.segment``: one speaker's run of words."""
    fields = {
        "id": new_id("seg"),
        "item_id": item_id,
        "content_index": content_index,
        "text": text,
        "speaker": speaker,
        "start": round(start_s, 3),
        "end": round(end_s, 3),
    }
    return _event(f"{_TRANSCRIPTION}.segment", **fields)


def transcription_failed(
    item_id: str, message: str, code: str | None = None, content_index: int = 0
) -> Event:
    """``conversation.item.input_audio_transcription.failed``."""
    error = {"type": "transcription_error", "code": code, "message": message, "param": None}
    return _event(f"{_TRANSCRIPTION}.failed", item_id=item_id, content_index=content_index, error=error)


# --- responses -------------------------------------------------------------------------------


def timings_metadata(timings: Mapping[str, float]) -> dict[str, str]:
    """Encodes timings as metadata: ``{"asr_ms": 12.34}`` -> ``{"voxray.asr_ms": "12.3"}``."""
    return {f"{TIMING_PREFIX}{name}": f"{value:.1f}" for name, value in timings.items()}


def parse_timings(metadata: Mapping[str, str] | None) -> dict[str, float]:
    """Inverse of :func:`timings_metadata`: the voxray timings in ``response.metadata``."""
    timings = {}
    for key, value in (metadata or {}).items():
        if key.startswith(TIMING_PREFIX):
            try:
                timings[key[len(TIMING_PREFIX) :]] = float(value)
            except ValueError:
                continue  # not a timing
    return timings


def response_usage(input_tokens: int | None = None, output_tokens: int | None = None) -> dict[str, Any]:
    """``response.usage`` for text tokens; unknown counts are left out rather than guessed."""
    usage: dict[str, Any] = {}
    if input_tokens is not None:
        usage |= {"input_tokens": input_tokens, "input_token_details": {"text_tokens": input_tokens}}
    if output_tokens is not None:
        usage |= {"output_tokens": output_tokens, "output_token_details": {"text_tokens": output_tokens}}
    if input_tokens is not None and output_tokens is not None:
        usage["total_tokens"] = input_tokens + output_tokens
    return usage


def response_object(
    response_id: str,
    *,
    status: Literal["in_progress", "completed", "cancelled", "failed", "incomplete"],
    output: Sequence[ItemLike | Mapping[str, Any]] = (),
    output_modalities: Sequence[str] = ("audio",),
    voice: str | None = None,
    max_output_tokens: int | str = "inf",
    status_details: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    conversation_id: str | None = None,
) -> dict[str, Any]:
    """The ``response`` object of ``response.created`` / ``response.done``."""
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": dict(status_details) if status_details is not None else None,
        "output": [item_to_wire(item) for item in output],
        "conversation_id": conversation_id,
        "output_modalities": list(output_modalities),
        "max_output_tokens": max_output_tokens,
        "audio": {"output": {"format": dict(PCM_24K), "voice": voice}},
        "usage": dict(usage) if usage is not None else None,
        "metadata": dict(metadata) if metadata is not None else None,
    }


def response_created(response_id: str, **fields: Any) -> Event:
    """``response.created`` (status ``in_progress``); ``fields`` go to :func:`response_object`."""
    return _event("response.created", response=response_object(response_id, status="in_progress", **fields))


def response_done(
    response_id: str,
    item: ItemLike | Mapping[str, Any] | None = None,
    *,
    status: Literal["completed", "cancelled", "failed", "incomplete"] = "completed",
    reason: str | None = None,
    error: str | Mapping[str, Any] | None = None,
    output_tokens: int | None = None,
    timings: Mapping[str, float] | None = None,
    metadata: Mapping[str, str] | None = None,
    **fields: Any,
) -> Event:
    """``response.done`` for a response whose output is ``item`` (or nothing).

    Args:
        response_id: The response.
        item: Its assistant message, if one was started.
        status: How it ended.
        reason: For ``cancelled``: ``turn_detected`` / ``client_cancelled``; for
            ``incomplete``: ``max_output_tokens``.
        error: For ``failed``: a message (reported as a ``server_error``) or an error object.
        output_tokens: Tokens the LLM generated, reported as ``usage.output_tokens``.
        timings: Per-stage timings in ms, added to ``metadata`` by :func:`timings_metadata`.
        metadata: The client's ``response.create`` metadata, echoed back.
        fields: More :func:`response_object` fields (``voice``, ``output_modalities``, ...).
    """
    details = None
    if status != "completed":
        err = {"type": "server_error", "message": error} if isinstance(error, str) else error
        details = {"type": status, "reason": reason, "error": dict(err) if err else None}
    merged = {**(metadata or {}), **timings_metadata(timings or {})}
    if item is not None and "output_modalities" not in fields and not isinstance(item, Mapping):
        fields["output_modalities"] = ["audio" if item.modality == "audio" else "text"]
    response = response_object(
        response_id,
        status=status,
        output=[item] if item is not None else [],
        status_details=details,
        usage=response_usage(output_tokens=output_tokens) if output_tokens is not None else None,
        metadata=merged or None,
        **fields,
    )
    return _event("response.done", response=response)


def _in_response(type_: str, response_id: str, **fields: Any) -> Event:
    # A voxray response has one output item, the assistant message, with one content part.
    return _event(type_, response_id=response_id, output_index=0, **fields)


def _in_part(type_: str, response_id: str, item_id: str, **fields: Any) -> Event:
    return _in_response(type_, response_id, item_id=item_id, content_index=0, **fields)


def response_output_item_added(response_id: str, item: ItemLike | Mapping[str, Any]) -> Event:
    """``response.output_item.added``."""
    return _in_response("response.output_item.added", response_id, item=item_to_wire(item))


def response_output_item_done(response_id: str, item: ItemLike | Mapping[str, Any]) -> Event:
    """``response.output_item.done``."""
    return _in_response("response.output_item.done", response_id, item=item_to_wire(item))


def _part(text: str, audio: bool) -> dict[str, Any]:
    return {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}


def response_content_part_added(response_id: str, item_id: str, *, audio: bool = True) -> Event:
    """``response.content_part.added``: an empty audio part (or text part)."""
    return _in_part("response.content_part.added", response_id, item_id, part=_part("", audio))


def response_content_part_done(response_id: str, item_id: str, text: str, *, audio: bool = True) -> Event:
    """``response.content_part.done`` with the part's final transcript (or text)."""
    return _in_part("response.content_part.done", response_id, item_id, part=_part(text, audio))


def response_transcript_delta(response_id: str, item_id: str, delta: str, audio: bool = True) -> Event:
    """Reply text: ``response.output_audio_transcript.delta``, or ``output_text.delta`` without audio."""
    type_ = "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
    return _in_part(type_, response_id, item_id, delta=delta)


def response_transcript_done(response_id: str, item_id: str, text: str, audio: bool = True) -> Event:
    """``response.output_audio_transcript.done`` (``transcript``), or ``output_text.done`` (``text``)."""
    if audio:
        return _in_part("response.output_audio_transcript.done", response_id, item_id, transcript=text)
    return _in_part("response.output_text.done", response_id, item_id, text=text)


def response_output_audio_delta(response_id: str, item_id: str, pcm16: bytes) -> Event:
    """``response.output_audio.delta`` carrying base64 PCM16 24 kHz mono."""
    delta = base64.b64encode(pcm16).decode("ascii")
    return _in_part("response.output_audio.delta", response_id, item_id, delta=delta)


def response_output_audio_done(response_id: str, item_id: str) -> Event:
    """``response.output_audio.done``."""
    return _in_part("response.output_audio.done", response_id, item_id)
