"""Client edits of the conversation (``conversation.item.*``) and the text limits on them.

These events touch only the conversation and the client, never audio or responses. Text a
client sends goes to the LLM and, for instructions, back out in every ``session.updated``,
so its length is bounded by ``limits.max_text_chars``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from serve_app.config import LimitsConfig
from serve_app.engine.conversation import Item, new_id
from serve_app.engine.errors import RequestRefused
from serve_app.engine.session import VoiceSession
from serve_app.protocols.realtime import wire as rt

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def check_text_length(text: str | None, param: str, limits: LimitsConfig, event_id: str | None) -> None:
    """Refuse text longer than ``limits.max_text_chars`` (OpenAI's ``string_above_max_length``).

    Raises:
        ProtocolError: ``string_above_max_length`` with ``param``.
    """
    if text is not None and len(text) > limits.max_text_chars:
        raise rt.ProtocolError(
            "string_above_max_length",
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{limits.max_text_chars}, but got a string with length {len(text)} instead.",
            event_id=event_id,
            param=param,
        )


def session_preset(session: dict[str, Any]) -> Any:
    """Validate a ``session`` object as a ``session.update`` would carry it.

    Raises:
        ProtocolError: As for ``session.update``, with ``param`` under ``session.``.
    """
    raw = json.dumps({"type": "session.update", "session": session})
    return rt.parse_client_event(raw, max_bytes=len(raw))


class ItemEvents:
    """Handles ``conversation.item.create``, ``.delete`` and ``.truncate`` for one session.

    Args:
        engine: The session's engine, which owns the conversation.
        emit: Sends one server event to the client.
        limits: The app's limits (text length).
    """

    def __init__(self, engine: VoiceSession, emit: Emit, limits: LimitsConfig) -> None:
        self._engine = engine
        self._emit = emit
        self._limits = limits

    async def create(self, event: Any) -> None:
        """Add a client-written item after ``previous_item_id`` (default: at the end)."""
        check_text_length(event.item.text, "item.content", self._limits, event.event_id)
        item = Item(id=event.item.id or new_id("item"), role=event.item.role, text=event.item.text)
        with refusals_as_errors(event.event_id):
            previous = self._engine.add_item(item, event.previous_item_id)
        await self._emit(rt.conversation_item_added(item, previous_item_id=previous))
        await self._emit(rt.conversation_item_done(item, previous_item_id=previous))

    async def delete(self, event: Any) -> None:
        """Remove an item."""
        with refusals_as_errors(event.event_id):
            self._engine.delete_item(event.item_id)
        await self._emit(rt.conversation_item_deleted(event.item_id))

    async def truncate(self, event: Any) -> None:
        """Cut an assistant item to what the user heard before interrupting playback."""
        with refusals_as_errors(event.event_id):
            item = self._engine.truncate_item(event.item_id, event.audio_end_ms)
        await self._emit(rt.conversation_item_truncated(item.id, event.content_index, event.audio_end_ms))


@contextlib.contextmanager
def refusals_as_errors(event_id: str | None) -> Iterator[None]:
    """Turn the engine's refusals into Realtime ``error`` events for the client event ``event_id``."""
    try:
        yield
    except RequestRefused as refused:
        raise rt.ProtocolError(
            refused.code, refused.message, event_id=event_id, param=refused.param
        ) from None
