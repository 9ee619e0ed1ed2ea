"""OpenAI Realtime (GA) client events: the validated models of what clients send.

The models follow ``openai.types.realtime`` (the spec), with two deliberate differences:
they are *strict* about the types of the fields they know (``"0.5"`` is not a threshold) and
*tolerant* of fields they do not know, because the SDK and browsers send settings voxray ignores
(tools, tracing, truncation, ...). Base64 audio is decoded during validation, so events carry
``bytes``. Validators raise pydantic errors typed with OpenAI's codes (``invalid_base64``,
``invalid_value``); ``realtime.parse_client_event`` turns them into ``ProtocolError``.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

from serve_app.protocols.realtime import client_models
from serve_app.protocols.realtime.client_models import *  # noqa: F403  (re-exported: see __all__)
from serve_app.protocols.realtime.client_models import (
    MessageItem,
    Pcm16Audio,
    ResponseParams,
    SessionConfig,
    WireModel,
)

# fmt: off
__all__ = [
    *client_models.__all__,
    "CLIENT_EVENT_TYPES", "ClientEvent", "ConversationItemCreateEvent", "ConversationItemDeleteEvent",
    "ConversationItemRetrieveEvent", "ConversationItemTruncateEvent", "InputAudioBufferAppendEvent",
    "InputAudioBufferClearEvent", "InputAudioBufferCommitEvent", "OutputAudioBufferClearEvent",
    "ResponseCancelEvent", "ResponseCreateEvent", "SessionUpdateEvent",
]
# fmt: on


# --- events ----------------------------------------------------------------------------------


class _ClientEvent(WireModel):
    event_id: str | None = None


class SessionUpdateEvent(_ClientEvent):
    """``session.update``."""

    type: Literal["session.update"]
    session: SessionConfig


class InputAudioBufferAppendEvent(_ClientEvent):
    """``input_audio_buffer.append``; ``audio`` is decoded PCM16 (even length)."""

    type: Literal["input_audio_buffer.append"]
    audio: Pcm16Audio


class InputAudioBufferCommitEvent(_ClientEvent):
    """``input_audio_buffer.commit``."""

    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClearEvent(_ClientEvent):
    """``input_audio_buffer.clear``."""

    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClearEvent(_ClientEvent):
    """``output_audio_buffer.clear`` (WebRTC/SIP only in OpenAI)."""

    type: Literal["output_audio_buffer.clear"]


class ConversationItemCreateEvent(_ClientEvent):
    """``conversation.item.create``."""

    type: Literal["conversation.item.create"]
    item: MessageItem
    previous_item_id: str | None = None


class ConversationItemDeleteEvent(_ClientEvent):
    """``conversation.item.delete``."""

    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemRetrieveEvent(_ClientEvent):
    """``conversation.item.retrieve``."""

    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncateEvent(_ClientEvent):
    """``conversation.item.truncate``: the client played only ``audio_end_ms`` of an answer."""

    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreateEvent(_ClientEvent):
    """``response.create``."""

    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancelEvent(_ClientEvent):
    """``response.cancel``; without ``response_id`` it cancels the response in progress."""

    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdateEvent
    | InputAudioBufferAppendEvent
    | InputAudioBufferCommitEvent
    | InputAudioBufferClearEvent
    | OutputAudioBufferClearEvent
    | ConversationItemCreateEvent
    | ConversationItemDeleteEvent
    | ConversationItemRetrieveEvent
    | ConversationItemTruncateEvent
    | ResponseCreateEvent
    | ResponseCancelEvent,
    Field(discriminator="type"),
]
"""Any parsed client event; ``event.type`` tells which."""

CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(get_args(ClientEvent)[0])
)
