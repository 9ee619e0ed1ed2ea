"""Requests the engine refuses: the adapter tells its client in its own protocol's words."""

from __future__ import annotations

from typing import Literal

RefusalCode = Literal[
    "input_audio_buffer_full",
    "input_audio_buffer_commit_empty",
    "conversation_already_has_active_response",
    "response_cancel_not_active",
    "item_already_exists",
    "item_not_found",
    "invalid_value",
]


class RequestRefused(Exception):
    """A client request the engine cannot carry out; nothing changed.

    Attributes:
        code: What went wrong (the OpenAI Realtime error code of the same case).
        message: What to fix, in words a client developer can act on.
        param: The request field at fault, if one is.
    """

    def __init__(self, code: RefusalCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code: RefusalCode = code
        self.message = message
        self.param = param
