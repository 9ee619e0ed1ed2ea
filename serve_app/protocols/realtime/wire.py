"""The OpenAI Realtime (GA) wire protocol: parsing, errors, session state, and re-exports.

Pure protocol, no Ray and no models. The pieces:

* ``client_events``: pydantic models of the events clients send;
* ``server_events``: builders of the events voxray sends (plain dicts for ``json.dumps``);
* ``errors``: :class:`ProtocolError` (an OpenAI-style code and ``param``);
* ``session_state``: :class:`SessionState` (the effective session config that
  ``session.update`` changes and ``session.created`` / ``session.updated`` report);
* this module: :func:`parse_client_event` (raw message -> model, or :class:`ProtocolError`).

Import everything from here; the split exists only to keep files small.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from serve_app.protocols.realtime import client_events, server_events
from serve_app.protocols.realtime.client_events import *  # noqa: F403  (re-exported: see __all__)
from serve_app.protocols.realtime.client_events import CLIENT_EVENT_TYPES, ClientEvent
from serve_app.protocols.realtime.errors import ProtocolError
from serve_app.protocols.realtime.server_events import *  # noqa: F403
from serve_app.protocols.realtime.session_state import SessionState

__all__ = [
    *client_events.__all__,
    *server_events.__all__,
    "ProtocolError",
    "SessionState",
    "parse_client_event",
]


_CLIENT_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientEvent)

MAX_EVENT_ID_CHARS = 512  # ids are echoed in errors: a longer one is refused, not sent back
MAX_PARAM_KEY_CHARS = 64  # a client's dict key shown in ``param`` is cut to this (metadata keys)
# A \uD800-\uDFFF escape in the raw text: the only way a lone surrogate can get into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON; OpenAI's parser rejects them too.
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(data: Any) -> bool:
    """Whether any string (or key) in parsed JSON holds an unpaired UTF-16 surrogate.

    ``json`` joins escaped surrogate pairs into one code point, so any surrogate left is lone.
    Iterative, because the data may be nested as deep as ``json`` allows.
    """
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _load_json(raw: str | bytes) -> Any:
    """``json.loads`` for one WebSocket message, stricter than the standard library.

    Binary frames must be UTF-8 (``json.loads`` would also take UTF-16/32 and, through
    ``surrogatepass``, CESU-8 surrogates); NaN/Infinity and unpaired surrogates are refused.
    The last two are not Unicode text: they break any later encoder (a tokenizer, a TTS
    front end, a client's JSON parser), so they stop here.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ProtocolError("invalid_json", f"The message is not valid UTF-8: {exc}.") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"The server failed to parse the JSON message: {exc}.") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        raise ProtocolError(
            "invalid_json",
            "The message holds an unpaired UTF-16 surrogate escape, which is not valid Unicode.",
        )
    return data


def parse_client_event(raw: str | bytes, max_bytes: int) -> ClientEvent:
    """Parses and validates one client message.

    Args:
        raw: The WebSocket message (text or binary frame holding UTF-8 JSON).
        max_bytes: Largest accepted message, in bytes.

    Returns:
        One of the event models of :data:`ClientEvent`.

    Raises:
        ProtocolError: With code ``message_too_large``, ``invalid_json``, ``invalid_type``,
            ``missing_required_parameter``, ``unknown_event_type``, ``invalid_value`` or
            ``invalid_base64``; ``event_id`` is set whenever the message carried a string one
            of at most :data:`MAX_EVENT_ID_CHARS` characters (a longer one is itself the error).
    """
    size = len(raw) if isinstance(raw, bytes) or raw.isascii() else len(raw.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ProtocolError(
            "message_too_large", f"Message of {size} bytes exceeds the maximum of {max_bytes} bytes."
        )
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise ProtocolError("invalid_json", f"Expected a JSON object, but got {_json_kind(data)}.")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if event_id is not None and len(event_id) > MAX_EVENT_ID_CHARS:
        raise ProtocolError(
            "invalid_value",
            f"Invalid 'event_id': string should have at most {MAX_EVENT_ID_CHARS} characters, "
            f"but got {len(event_id)}.",
            param="event_id",
        )
    event_type = data.get("type")
    if event_type is None:
        raise ProtocolError(
            "missing_required_parameter", "Missing required parameter: 'type'.", event_id, "type"
        )
    if not isinstance(event_type, str):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for 'type': expected a string, but got {_json_kind(event_type)} instead.",
            event_id,
            "type",
        )
    if event_type not in CLIENT_EVENT_TYPES:
        supported = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES)
        raise ProtocolError(
            "unknown_event_type",
            f"Invalid value: {_show(event_type)}. Supported values are: {supported}.",
            event_id,
            "type",
        )
    try:
        return _CLIENT_EVENT_ADAPTER.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _to_protocol_error(exc.errors(include_url=False)[0], data, event_id) from None


# --- pydantic errors -> OpenAI-style errors ----------------------------------------------------

_EXPECTED_KIND = {
    "string_type": "a string",
    "bytes_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _show(value: Any) -> str:
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _param(data: Any, loc: tuple[int | str, ...], missing: bool) -> str:
    """Maps a pydantic error location to OpenAI's dotted ``param``, skipping union tags."""
    param, node = "", data
    for position, key in enumerate(loc):
        if isinstance(node, dict) and isinstance(key, str) and key in node:
            shown = key if len(key) <= MAX_PARAM_KEY_CHARS else key[: MAX_PARAM_KEY_CHARS - 3] + "..."
            param, node = f"{param}.{shown}" if param else shown, node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            param, node = f"{param}[{key}]", node[key]
        elif missing and position == len(loc) - 1 and isinstance(key, str):
            param = f"{param}.{key}" if param else key
        # anything else is a union tag or a validator name inserted by pydantic
    return param


def _join(param: str, suffix: str) -> str:
    return f"{param}.{suffix}" if param else suffix


def _to_protocol_error(err: ErrorDetails, data: dict[str, Any], event_id: str | None) -> ProtocolError:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    param = _param(data, err["loc"], missing=kind == "missing")
    if ctx.get("subpath"):
        param = _join(param, ctx["subpath"])
    if kind in ("missing", "missing_required_parameter"):
        return ProtocolError(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", event_id, param
        )
    if kind == "union_tag_not_found" and isinstance(value, dict):
        param = _join(param, "type")
        return ProtocolError(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", event_id, param
        )
    expected = ctx.get("expected") if kind == "invalid_type" else _EXPECTED_KIND.get(kind)
    if kind == "union_tag_not_found":
        expected = "an object"
    if expected is not None:
        return ProtocolError(
            "invalid_type",
            f"Invalid type for '{param}': expected {expected}, but got {_json_kind(value)} instead.",
            event_id,
            param,
        )
    if kind == "union_tag_invalid":
        param = _join(param, "type")
        return ProtocolError(
            "invalid_value",
            f"Invalid value: {_show(value.get('type'))}. Supported values are: {ctx['expected_tags']}.",
            event_id,
            param,
        )
    if kind == "literal_error":
        return ProtocolError(
            "invalid_value",
            f"Invalid value: {_show(value)}. Supported values are: {ctx['expected']}.",
            event_id,
            param,
        )
    if kind in ("invalid_base64", "invalid_value"):  # raised by our validators, already worded
        return ProtocolError(kind, f"Invalid '{param}': {err['msg']}.", event_id, param)
    message = err["msg"][0].lower() + err["msg"][1:]  # pydantic's own: "Input should be ..."
    return ProtocolError("invalid_value", f"Invalid '{param}': {message}.", event_id, param)
