"""One session's conversation: its items in order, and the chat history built from them."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Literal

from deployments.types import ChatMessage

Role = Literal["user", "assistant", "system"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


def new_id(prefix: str) -> str:
    """A random id in the OpenAI style (``item_…``, ``resp_…``, ``event_…``)."""
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class Item:
    """A message in the conversation.

    Attributes:
        id: The item id the client sees.
        role: Who said it.
        text: What was said: the user's transcript or text, or what the assistant actually got
            out before it finished or was interrupted.
        modality: ``audio`` for spoken items (``text`` is their transcript), else ``text``.
        status: ``in_progress`` while being spoken or transcribed.
        audio_ms: Length of the audio of a spoken item.
    """

    id: str
    role: Role
    text: str = ""
    modality: Literal["audio", "text"] = "text"
    status: ItemStatus = "completed"
    audio_ms: int = 0
    phrase_audio_ms: list[tuple[str, int]] = field(default_factory=list)

    def snapshot(self) -> Item:
        """A copy as it is now, for events: later changes to this item do not show in it."""
        return dataclasses.replace(self, phrase_audio_ms=list(self.phrase_audio_ms))


class Conversation:
    """Ordered items of one session; the source of the LLM's chat history."""

    def __init__(self, max_history_messages: int, max_items: int | None = None) -> None:
        self._items: list[Item] = []
        self._max_messages = max_history_messages
        # Items older than the LLM history are kept for the client's references (truncate,
        # delete) up to a bound, so a long session does not grow without limit.
        self._max_items = max(max_items or 4 * max_history_messages, max_history_messages)

    @property
    def items(self) -> list[Item]:
        """The items, oldest first."""
        return list(self._items)

    @property
    def last_id(self) -> str | None:
        """Id of the newest item, the ``previous_item_id`` of the next one."""
        return self._items[-1].id if self._items else None

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert ``item`` after ``previous_item_id`` (default: at the end).

        Returns:
            The id of the item it now follows.

        Raises:
            KeyError: ``previous_item_id`` names no item.
        """
        if previous_item_id is None:
            previous = self.last_id
            self._items.append(item)
        else:
            previous = previous_item_id
            self._items.insert(self._index(previous_item_id) + 1, item)
        if len(self._items) > self._max_items:
            del self._items[: len(self._items) - self._max_items]  # the oldest go first
        return previous

    def has(self, item_id: str) -> bool:
        """Whether an item with ``item_id`` exists."""
        return any(item.id == item_id for item in self._items)

    def get(self, item_id: str) -> Item:
        """The item with ``item_id``.

        Raises:
            KeyError: no such item.
        """
        return self._items[self._index(item_id)]

    def delete(self, item_id: str) -> None:
        """Remove an item.

        Raises:
            KeyError: no such item.
        """
        del self._items[self._index(item_id)]

    def truncate_audio(self, item_id: str, audio_end_ms: int) -> Item:
        """Cut an assistant item's text to the phrases that had started playing by ``audio_end_ms``.

        Clients send this (``conversation.item.truncate``) when the user interrupted playback,
        so the history holds what the user actually heard.

        Raises:
            KeyError: no such item.
            ValueError: the item is not an assistant message.
        """
        item = self.get(item_id)
        if item.role != "assistant":
            raise ValueError("Only assistant audio items can be truncated.")
        kept, start_ms = [], 0
        for phrase, end_ms in item.phrase_audio_ms:
            if start_ms >= audio_end_ms:
                break
            kept.append(phrase)
            start_ms = end_ms
        item.text = "".join(kept).strip()
        return item

    def messages(self, instructions: str) -> list[ChatMessage]:
        """Chat history for the LLM: the instructions, then the newest items that fit.

        Items still being transcribed or empty are left out; consecutive messages of one role
        are kept as they are (chat templates accept them).
        """
        history = [
            ChatMessage(role=item.role, content=item.text)
            for item in self._items
            if item.text.strip() and item.status != "in_progress"
        ]
        history = history[-(self._max_messages - 1) :]
        system = [ChatMessage(role="system", content=instructions)] if instructions else []
        return system + history

    def _index(self, item_id: str) -> int:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        raise KeyError(item_id)
