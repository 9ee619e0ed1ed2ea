"""Shared by the ``test_protocol*`` files: checks against the official ``openai`` types, and inputs.

:func:`assert_official` is how every file validates what voxray sends; ``BASES`` are the valid
client events that ``test_protocol_errors`` breaks one field at a time and that
``test_protocol_client`` checks parse as they stand. They live here so neither test file has to
import the other.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from openai._models import construct_type_unchecked
from openai.types import realtime as oai
from pydantic import BaseModel, TypeAdapter

SERVER_EVENT = TypeAdapter(oai.RealtimeServerEvent)
MAX = 1 << 20
PCM = b"\x01\x00\xff\x7f" * 240  # 480 samples, 20 ms at 24 kHz
B64 = base64.b64encode(PCM).decode()


def no_extras(model: Any, path: str, allowed: set[str]) -> None:
    """Fails on any key the official model does not declare."""
    if isinstance(model, BaseModel):
        unexpected = {k for k in model.__pydantic_extra__ or {} if f"{path}.{k}".lstrip(".") not in allowed}
        assert not unexpected, f"{path}: keys unknown to {type(model).__name__}: {unexpected}"
        for name in type(model).model_fields:
            no_extras(getattr(model, name), f"{path}.{name}", allowed)
    elif isinstance(model, list):
        for index, value in enumerate(model):
            no_extras(value, f"{path}[{index}]", allowed)


def assert_official(
    event: dict[str, Any], cls: type[BaseModel], allowed_extras: frozenset[str] = frozenset()
):
    """Validates ``event`` as the official ``cls`` every way we can; returns the strict model."""
    wire = json.loads(json.dumps(event))  # what actually travels
    assert re.fullmatch(r"event_[0-9a-f]{20}", wire["event_id"])
    assert type(SERVER_EVENT.validate_python(wire)) is cls
    assert type(construct_type_unchecked(value=wire, type_=oai.RealtimeServerEvent)) is cls  # SDK's recv()
    strict = cls.model_validate(wire, strict=True)
    no_extras(strict, "", set(allowed_extras))
    assert strict.model_dump(mode="json", exclude_unset=True) == wire
    return strict


def turn(**turn_detection: Any) -> dict[str, Any]:
    """A ``session.audio.input`` fragment that sets only ``turn_detection``."""
    return {"turn_detection": turn_detection}


USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
# One valid client event per shape; the error tests put a bad value into a copy of one.
BASES: dict[str, dict[str, Any]] = {
    "session": {"type": "session.update", "session": {"type": "realtime"}},
    "vad": {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": turn(type="server_vad")}},
    },
    "append": {"type": "input_audio_buffer.append", "audio": "AAAAAA=="},
    "item": {"type": "conversation.item.create", "item": USER_ITEM},
    "response": {"type": "response.create", "response": {}},
    "cancel": {"type": "response.cancel"},
    "delete": {"type": "conversation.item.delete", "item_id": "i"},
    "truncate": {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 0},
}
