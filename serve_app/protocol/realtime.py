"""The OpenAI Realtime (GA) wire protocol: parsing, errors, session state, and re-exports.

Pure protocol, no Ray and no models. The pieces:

* ``client_events``: pydantic models of the events clients send;
* ``server_events``: builders of the events voxray sends (plain dicts for ``json.dumps``);
* this module: :func:`parse_client_event` (raw message -> model, or :class:`ProtocolError` with an
  OpenAI-style code and ``param``) and :class:`SessionState` (the effective session config that
  ``session.update`` changes and ``session.created`` / ``session.updated`` report).

Import everything from here; the split exists only to keep files small.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from serve_app.protocol import client_events, server_events
from serve_app.protocol.client_events import *  # noqa: F403  (re-exported: see __all__)
from serve_app.protocol.client_events import (
    CLIENT_EVENT_TYPES,
    AudioFormat,
    AudioFormatPCM,
    ClientEvent,
    InputTranscription,
    SemanticVad,
    ServerVad,
    SessionConfig,
    SessionUpdateEvent,
)
from serve_app.protocol.server_events import *  # noqa: F403
from serve_app.protocol.server_events import PCM_24K, error_event, new_id

__all__ = [
    *client_events.__all__,
    *server_events.__all__,
    "ProtocolError",
    "SessionState",
    "parse_client_event",
]


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


# --- session state ---------------------------------------------------------------------------


class SessionState(BaseModel):
    """The effective configuration of one Realtime session.

    Built from the server's defaults when the WebSocket opens (:meth:`from_defaults`), changed by
    ``session.update`` (:meth:`apply_update`) and reported by ``session.created`` /
    ``session.updated`` (:meth:`to_wire`: the GA ``RealtimeSessionCreateRequest`` shape plus
    ``id`` and ``object``). Audio is PCM16 24 kHz mono both ways; ``turn_detection=None`` means
    the client commits turns and asks for responses itself; ``max_output_tokens=None`` is "inf".
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    id: str = Field(default_factory=lambda: new_id("sess"))
    model: str = "voxray"
    instructions: str = ""
    output_modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["audio"])
    voice: str = "alloy"
    speed: float = Field(default=1.0, ge=0.25, le=1.5)
    transcription: InputTranscription | None = None
    turn_detection: ServerVad | None = Field(default_factory=ServerVad)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # What a server_vad update fills in for fields it leaves out when turn detection was off.
    _vad_defaults: ServerVad = PrivateAttr(default_factory=ServerVad)

    input_rate: ClassVar[int] = 24_000
    output_rate: ClassVar[int] = 24_000

    @classmethod
    def from_defaults(cls, session_id: str, defaults: Any, model: str = "voxray") -> SessionState:
        """A session with the server's defaults.

        Args:
            session_id: The ``sess_...`` id.
            defaults: ``serve_app.config.SessionDefaults`` (``instructions``, ``voice`` and
                ``turn_detection`` with ``threshold``, ``prefix_padding_ms``, ``silence_duration_ms``).
            model: The name reported as ``session.model``.
        """
        vad = defaults.turn_detection
        turn = ServerVad(
            threshold=vad.threshold,
            prefix_padding_ms=vad.prefix_padding_ms,
            silence_duration_ms=vad.silence_duration_ms,
        )
        config = {"instructions": defaults.instructions, "voice": defaults.voice, "turn_detection": turn}
        return cls(id=session_id, model=model, **config)

    def model_post_init(self, context: Any, /) -> None:
        """Remembers the initial server VAD settings as the defaults for later updates."""
        if self.turn_detection is not None:
            self._vad_defaults = self.turn_detection

    @property
    def create_response(self) -> bool:
        """Whether the end of detected speech starts a response."""
        return self.turn_detection is not None and self.turn_detection.create_response

    @property
    def interrupt_response(self) -> bool:
        """Whether detected speech cancels the response in progress (barge-in)."""
        return self.turn_detection is not None and self.turn_detection.interrupt_response

    @property
    def language(self) -> str | None:
        """The input language the client named for transcription, if any."""
        return self.transcription.language if self.transcription else None

    def apply_update(
        self,
        update: SessionUpdateEvent | SessionConfig,
        *,
        event_id: str | None = None,
        voice_locked: bool = False,
        semantic_vad_fallback: bool = False,
    ) -> None:
        """Merges a parsed ``session.update``: fields it carries replace the current ones.

        All or nothing: on error nothing changes. ``null`` turns ``transcription`` and
        ``turn_detection`` off; ``null`` elsewhere leaves the field unchanged. A ``server_vad``
        object keeps the current value of any field it leaves out.

        Args:
            update: The parsed event, or its ``session``.
            event_id: The client's ``event_id`` for errors (taken from ``update`` if an event).
            voice_locked: True once the session has produced audio; changing the voice is then
                an error, as in OpenAI's API.
            semantic_vad_fallback: Run ``semantic_vad`` requests as ``server_vad`` (keeping
                their ``create_response``/``interrupt_response``) instead of rejecting them.

        Raises:
            ProtocolError: ``invalid_value`` for formats other than 24 kHz ``audio/pcm`` and for
                ``semantic_vad`` (unless falling back); ``cannot_update_voice``.
        """
        if isinstance(update, SessionUpdateEvent):
            event_id, cfg = event_id or update.event_id, update.session
        else:
            cfg = update
        changes: dict[str, Any] = {
            name: getattr(cfg, name)
            for name in ("instructions", "output_modalities")
            if getattr(cfg, name) is not None
        }
        if cfg.max_output_tokens is not None:
            changes["max_output_tokens"] = None if cfg.max_output_tokens == "inf" else cfg.max_output_tokens
        audio_in = cfg.audio.input if cfg.audio else None
        audio_out = cfg.audio.output if cfg.audio else None
        if audio_in is not None:
            _require_pcm(audio_in.format, "session.audio.input.format.type", event_id)
            if "transcription" in audio_in.model_fields_set:
                changes["transcription"] = audio_in.transcription
            if "turn_detection" in audio_in.model_fields_set:
                changes["turn_detection"] = self._merge_turn_detection(
                    audio_in.turn_detection, semantic_vad_fallback, event_id
                )
        if audio_out is not None:
            _require_pcm(audio_out.format, "session.audio.output.format.type", event_id)
            if audio_out.voice is not None and audio_out.voice != self.voice:
                if voice_locked:
                    raise ProtocolError(
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        event_id,
                        "session.audio.output.voice",
                    )
                changes["voice"] = audio_out.voice
            if audio_out.speed is not None:
                changes["speed"] = audio_out.speed
        for name, value in changes.items():
            setattr(self, name, value)

    def _merge_turn_detection(
        self, requested: ServerVad | SemanticVad | None, fallback: bool, event_id: str | None
    ) -> ServerVad | None:
        if requested is None:
            return None
        if isinstance(requested, SemanticVad):
            if not fallback:
                raise ProtocolError(
                    "invalid_value",
                    "Unsupported value: 'semantic_vad'. voxray supports 'server_vad' turn detection, "
                    "or null for manual turns.",
                    event_id,
                    "session.audio.input.turn_detection.type",
                )
            fields = {"create_response", "interrupt_response"} & requested.model_fields_set
        else:
            fields = requested.model_fields_set - {"type"}
        base = self.turn_detection or self._vad_defaults
        return base.model_copy(update={name: getattr(requested, name) for name in fields})

    def to_wire(self) -> dict[str, Any]:
        """The session object of ``session.created`` / ``session.updated``."""
        turn = self.turn_detection.model_dump() if self.turn_detection else None
        transcription = self.transcription.model_dump() if self.transcription else None
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": dict(PCM_24K),
                    "transcription": transcription,
                    "noise_reduction": None,
                    "turn_detection": turn,
                },
                "output": {"format": dict(PCM_24K), "voice": self.voice, "speed": self.speed},
            },
            "max_output_tokens": "inf" if self.max_output_tokens is None else self.max_output_tokens,
            "tools": [],
            "tool_choice": "auto",
            "tracing": None,
        }


def _require_pcm(fmt: AudioFormat | None, param: str, event_id: str | None) -> None:
    if fmt is not None and not isinstance(fmt, AudioFormatPCM):
        raise ProtocolError(
            "invalid_value",
            f"Unsupported value: '{fmt.type}'. voxray supports only 'audio/pcm' at 24000 Hz.",
            event_id,
            param,
        )
