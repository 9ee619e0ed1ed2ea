"""Client edits of the conversation (``conversation.item.*``) and the text limits on them.

Split from ``session.py``: these events touch only the conversation and the client, never
audio or responses. Text a client sends goes to the LLM and, for instructions, back out in
every ``session.updated``, so its length is bounded by ``limits.max_text_chars``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from serve_app.config import LimitsConfig
from serve_app.conversation import Conversation, Item, new_id
from serve_app.protocol import realtime as rt

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
        conversation: The session's conversation.
        emit: Sends one server event to the client.
        limits: The app's limits (text length).
    """

    def __init__(self, conversation: Conversation, emit: Emit, limits: LimitsConfig) -> None:
        self._conversation = conversation
        self._emit = emit
        self._limits = limits

    async def create(self, event: Any) -> None:
        """Add a client-written item after ``previous_item_id`` (default: at the end)."""
        check_text_length(event.item.text, "item.content", self._limits, event.event_id)
        item_id = event.item.id or new_id("item")
        if self._conversation.has(item_id):
            raise rt.ProtocolError(
                "item_already_exists",
                f"Item with id '{item_id[:100]}' already exists.",
                event_id=event.event_id,
                param="item.id",
            )
        item = Item(id=item_id, role=event.item.role, text=event.item.text)
        try:
            previous = self._conversation.add(item, event.previous_item_id)
        except KeyError as exc:
            raise rt.ProtocolError(
                "item_not_found",
                f"Previous item '{event.previous_item_id[:100]}' does not exist.",
                event_id=event.event_id,
                param="previous_item_id",
            ) from exc
        await self._emit(rt.conversation_item_added(item, previous_item_id=previous))
        await self._emit(rt.conversation_item_done(item, previous_item_id=previous))

    async def delete(self, event: Any) -> None:
        """Remove an item."""
        try:
            self._conversation.delete(event.item_id)
        except KeyError as exc:
            raise _not_found(event) from exc
        await self._emit(rt.conversation_item_deleted(event.item_id))

    async def truncate(self, event: Any) -> None:
        """Cut an assistant item to what the user heard before interrupting playback."""
        try:
            item = self._conversation.truncate_audio(event.item_id, event.audio_end_ms)
        except KeyError as exc:
            raise _not_found(event) from exc
        except ValueError as exc:
            raise rt.ProtocolError(
                "invalid_value", str(exc), event_id=event.event_id, param="item_id"
            ) from exc
        await self._emit(rt.conversation_item_truncated(item.id, event.content_index, event.audio_end_ms))


def _not_found(event: Any) -> rt.ProtocolError:
    return rt.ProtocolError(
        "item_not_found",
        f"Item '{event.item_id[:100]}' does not exist.",
        event_id=event.event_id,
        param="item_id",
    )
