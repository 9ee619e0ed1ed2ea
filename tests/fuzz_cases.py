"""Hostile and malformed client input, each with the response voxray documents for it.

The table drives ``tests/serve/test_fuzz.py``, which plays every case on its own WebSocket
against the real Serve app. A case is the frames to send and the outcome. Frames: a dict is
sent as JSON text, a ``str`` as a text frame, ``bytes`` as a binary frame, :class:`RawText`
as a text frame holding bytes that need not be UTF-8, :class:`Fragments` as one fragmented
text message. Outcomes: ``errors`` error events, all with code ``error``, ``param`` and
``event_id`` (and no other error); or the event types in ``replies`` and no error at all; or
a close with code ``close``. The README's "Protocol errors" section summarises this table.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from typing import Any

E = "evt_fuzz"  # the event_id every dict-built event carries; errors must echo it
MAX_MESSAGE_BYTES = 1 << 20  # limits.max_message_bytes (default)
MAX_INVALID_EVENTS = 100  # limits.max_invalid_events (default)
WS_MAX_BYTES = 16 << 20  # the WebSocket server's own frame limit (uvicorn's default)
VAD = "session.audio.input.turn_detection"
TRUNCATE = "conversation.item.truncate"
_AUTO: Any = object()


@dataclass(frozen=True)
class RawText:
    """Bytes sent as a *text* frame without UTF-8 validation (what a broken client might do)."""

    data: bytes


@dataclass(frozen=True)
class Fragments:
    """One text message sent as several WebSocket frames (a first frame and continuations)."""

    parts: tuple[str, ...]


Frame = dict[str, Any] | str | bytes | RawText | Fragments


@dataclass(frozen=True)
class Case:
    """One hostile input and its documented outcome.

    Attributes:
        name: Unique id (the pytest-style label in failure messages).
        frames: What the client sends, in order, as one burst.
        error: Code of the error events expected (``None``: none expected).
        param: Expected ``error.param``.
        event_id: Expected ``error.event_id``.
        errors: How many error events (exactly), or an inclusive ``(low, high)`` range.
        replies: Event types that must each arrive (legitimate input).
        close: Expected close code; the connection is not probed afterwards.
        final_error: For a close: the code of the last event before it.
    """

    name: str
    frames: tuple[Frame, ...]
    error: str | None = None
    param: str | None = None
    event_id: str | None = None
    errors: int | tuple[int, int] = 0
    replies: tuple[str, ...] = ()
    close: int | None = None
    final_error: str | None = None


def ev(type_: Any, **fields: Any) -> dict[str, Any]:
    """A client event with ``event_id`` E (pass ``event_id=...`` to change or drop it)."""
    return {"type": type_, "event_id": E, **fields}


def session(**fields: Any) -> dict[str, Any]:
    """``session.update`` with ``session = {"type": "realtime", **fields}``."""
    return ev("session.update", session={"type": "realtime", **fields})


def vad(**fields: Any) -> dict[str, Any]:
    """``session.update`` setting server VAD with ``fields``."""
    return session(audio={"input": {"turn_detection": {"type": "server_vad", **fields}}})


def out(**fields: Any) -> dict[str, Any]:
    """``session.update`` setting ``audio.output`` fields."""
    return session(audio={"output": fields})


def append(audio: Any, **fields: Any) -> dict[str, Any]:
    """``input_audio_buffer.append``; bytes are base64-encoded, anything else sent as is."""
    if isinstance(audio, bytes):
        audio = base64.b64encode(audio).decode()
    return ev("input_audio_buffer.append", audio=audio, **fields)


def item(*content: dict[str, Any], role: str = "user", **fields: Any) -> dict[str, Any]:
    """``conversation.item.create`` of a message (one ``input_text`` part by default)."""
    parts = list(content) or [{"type": "input_text", "text": "hello"}]
    return ev("conversation.item.create", item={"type": "message", "role": role, "content": parts, **fields})


def text(value: Any) -> dict[str, Any]:
    """A user item holding one ``input_text`` part with ``value``."""
    return item({"type": "input_text", "text": value})


def response(**fields: Any) -> dict[str, Any]:
    """``response.create`` with ``response = fields``."""
    return ev("response.create", response=fields)


def truncate(**fields: Any) -> dict[str, Any]:
    """``conversation.item.truncate`` of item ``item_x`` at 0 ms, with ``fields`` replaced."""
    defaults = {"item_id": "item_x", "content_index": 0, "audio_end_ms": 0}
    return ev(TRUNCATE, **{**defaults, **fields})


def audio_in(**fields: Any) -> dict[str, Any]:
    """``session.update`` setting ``audio.input`` fields."""
    return session(audio={"input": fields})


def raw_json(event: dict[str, Any], raw_value: str) -> str:
    """``event`` as JSON text with the value ``RAW`` replaced by ``raw_value``: for what
    ``json.dumps`` cannot write (1e400, 4000-digit integers, hand-made deep nesting)."""
    return json.dumps(event).replace(f'"{RAW}"', raw_value)


def nested(depth: int, leaf: str = "1", kind: str = "[") -> str:
    """JSON text of ``depth`` nested arrays (``kind="["``) or objects (``kind="{"``)."""
    return "[" * depth + leaf + "]" * depth if kind == "[" else '{"a":' * depth + leaf + "}" * depth


def sized(total: int) -> str:
    """A valid ``input_audio_buffer.clear`` of exactly ``total`` bytes (padded by an ignored key)."""
    head = '{"type":"input_audio_buffer.clear","pad":"'
    return head + "x" * (total - len(head) - 2) + '"}'


def fragments(message: str, size: int) -> Fragments:
    """``message`` cut into frames of ``size`` characters."""
    return Fragments(tuple(message[i : i + size] for i in range(0, len(message), size)))


def err(name: str, frames: Frame | tuple[Frame, ...], code: str, param: str | None = None, **kw: Any) -> Case:
    """A case answered by one error (``errors=`` for more); ``event_id`` defaults to the last
    frame's own string ``event_id``, as the server echoes it."""
    frames = frames if isinstance(frames, tuple) else (frames,)
    event_id = kw.pop("event_id", _AUTO)
    if event_id is _AUTO:
        last = frames[-1]
        event_id = last.get("event_id") if isinstance(last, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
    return Case(name, frames, code, param, event_id, kw.pop("errors", 1), **kw)


def ok(name: str, frames: Frame | tuple[Frame, ...], *replies: str) -> Case:
    """Legitimate (if odd) input: ``replies`` arrive and no error does."""
    return Case(name, frames if isinstance(frames, tuple) else (frames,), replies=replies)


SILENCE_10MS = bytes(480)
HUGE = 900_000  # characters: big, yet under the 1 MiB message limit
rng = random.Random(1234)  # fixed seed: the same "random" bytes every run

JSON, TYPE, VALUE, B64 = "invalid_json", "invalid_type", "invalid_value", "invalid_base64"
MISSING, UNKNOWN = "missing_required_parameter", "unknown_event_type"
NOT_FOUND, TOO_LARGE = "item_not_found", "message_too_large"
LONG = "string_above_max_length"
CLEAR, CLEARED, UPDATED = "input_audio_buffer.clear", "input_audio_buffer.cleared", "session.updated"
UNSUPPORTED, COMMIT_EMPTY = "unsupported_event_type", "input_audio_buffer_commit_empty"
AUDIO = "session.audio"
RAW = "<raw>"

# fmt: off
CASES: list[Case] = [
    # --- broken JSON ---------------------------------------------------------------------------
    err("json_truncated", '{"type": "input_audio_buffer.cl', JSON),
    err("json_trailing_garbage", '{"type": "input_audio_buffer.clear"} xyz', JSON),
    err("json_two_objects", '{"type": "input_audio_buffer.clear"}{"type": "input_audio_buffer.clear"}', JSON),
    err("json_nan", '{"type": "input_audio_buffer.clear", "x": NaN}', JSON),
    err("json_infinity", '{"type": "input_audio_buffer.clear", "x": Infinity}', JSON),
    err("json_minus_infinity", '{"type": "input_audio_buffer.clear", "x": -Infinity}', JSON),
    err("json_empty_string", "", JSON),
    err("json_only_whitespace", " \n\t\r ", JSON),
    err("json_single_quotes", "{'type': 'input_audio_buffer.clear'}", JSON),
    err("json_raw_control_char", '{"type": "input_audio_buffer.clear", "event_id": "a\x00b"}', JSON),
    err("json_5000_digit_integer", '{"type": "input_audio_buffer.clear", "x": ' + "9" * 5000 + "}", JSON),
    err("top_level_array", '[{"type": "input_audio_buffer.clear"}]', JSON),
    err("top_level_number", "42", JSON),
    err("top_level_string", '"input_audio_buffer.clear"', JSON),
    err("top_level_null", "null", JSON),
    err("top_level_boolean", "true", JSON),
    # --- deep nesting --------------------------------------------------------------------------
    err("nesting_10000_arrays", '{"type": "session.update", "session": ' + nested(10_000) + "}", JSON),
    err("nesting_10000_objects", raw_json(ev(CLEAR, x=RAW), nested(10_000, kind="{")), JSON),
    ok("nesting_300_in_ignored_key", raw_json(ev(CLEAR, x=RAW), nested(300)), CLEARED),
    err("nesting_300_in_typed_field", raw_json(session(instructions=RAW), nested(300)), TYPE,
        "session.instructions", event_id=E),
    # --- the type field and unknown events -----------------------------------------------------
    err("type_missing", {"event_id": E}, MISSING, "type"),
    err("type_null", ev(None), MISSING, "type"),
    err("type_number", ev(3), TYPE, "type"),
    err("type_object", ev({"name": "input_audio_buffer.clear"}), TYPE, "type"),
    err("type_array", ev(["input_audio_buffer.clear"]), TYPE, "type"),
    err("type_unknown", ev("session.create"), UNKNOWN, "type"),
    err("type_empty", ev(""), UNKNOWN, "type"),
    err("type_wrong_case", ev("INPUT_AUDIO_BUFFER.CLEAR"), UNKNOWN, "type"),
    err("type_trailing_space", ev("input_audio_buffer.clear "), UNKNOWN, "type"),
    err("type_beta_only", ev("transcription_session.update"), UNKNOWN, "type"),
    err("type_non_ascii", ev("réponse.créer"), UNKNOWN, "type"),
    err("type_900k_chars", ev("x" * HUGE), UNKNOWN, "type"),
    err("type_unsupported_retrieve", ev("conversation.item.retrieve", item_id="item_x"), UNSUPPORTED),
    err("type_unsupported_output_clear", ev("output_audio_buffer.clear"), UNSUPPORTED),
    # --- event_id ------------------------------------------------------------------------------
    err("event_id_number", ev(CLEAR, event_id=5), TYPE, "event_id"),
    err("event_id_object", ev(CLEAR, event_id={"id": "x"}), TYPE, "event_id"),
    err("event_id_900k_chars", ev(CLEAR, event_id="e" * HUGE), VALUE, "event_id", event_id=None),
    err("event_id_lone_surrogate", ev(CLEAR, event_id="\ud800"), JSON, event_id=None),
    # --- input_audio_buffer.append -------------------------------------------------------------
    err("audio_missing", ev("input_audio_buffer.append"), MISSING, "audio"),
    err("audio_number", append(12), TYPE, "audio"),
    err("audio_null", append(None), TYPE, "audio"),
    err("audio_array", append([0, 1]), TYPE, "audio"),
    err("base64_bad_chars", append("!!!notbase64!!!"), B64, "audio"),
    err("base64_bad_padding", append("AA=A"), B64, "audio"),
    err("base64_urlsafe_alphabet", append("-_-_"), B64, "audio"),
    err("base64_embedded_newline", append("AAAA\nAAAA"), B64, "audio"),
    err("audio_odd_1_byte", append(b"\x00"), VALUE, "audio"),
    err("audio_odd_4801_bytes", append(bytes(4801)), VALUE, "audio"),
    ok("audio_empty", append("")),
    ok("audio_unpadded_base64", append("AAAAAA")),
    ok("audio_flood_2000_valid_appends", tuple(append(SILENCE_10MS) for _ in range(2000))),
    err(
        "audio_buffer_full",
        (session(audio={"input": {"turn_detection": None}}), *(append(bytes(750_000)) for _ in range(8))),
        "input_audio_buffer_full",
        replies=(UPDATED,),
    ),
    # --- events out of order -------------------------------------------------------------------
    err("commit_empty_buffer", ev("input_audio_buffer.commit"), COMMIT_EMPTY),
    err("commit_50ms", (append(bytes(2400)), ev("input_audio_buffer.commit")), COMMIT_EMPTY),
    err("cancel_without_response", ev("response.cancel"), "response_cancel_not_active"),
    err(
        "second_response_while_active",
        (text("hi"), ev("response.create"), ev("response.create")),
        "conversation_already_has_active_response",
        replies=("response.created",),
    ),
    err("delete_unknown_item", ev("conversation.item.delete", item_id="item_nope"), NOT_FOUND, "item_id"),
    err(
        "delete_item_twice",
        (item(id="item_once"), *[ev("conversation.item.delete", item_id="item_once")] * 2),
        NOT_FOUND,
        "item_id",
        replies=("conversation.item.deleted",),
    ),
    err("truncate_unknown_item", truncate(), NOT_FOUND, "item_id"),
    err("truncate_user_item", (item(id="item_x"), truncate()), VALUE, "item_id",
        replies=("conversation.item.done",)),
    err("item_id_duplicate", (item(id="item_dup"), item(id="item_dup")), "item_already_exists", "item.id",
        replies=("conversation.item.done",)),
    err("previous_item_unknown", {**item(), "previous_item_id": "item_nope"}, NOT_FOUND, "previous_item_id"),
    # --- session.update ------------------------------------------------------------------------
    err("session_missing", ev("session.update"), MISSING, "session"),
    err("session_null", ev("session.update", session=None), TYPE, "session"),
    err("session_string", ev("session.update", session="realtime"), TYPE, "session"),
    err("session_type_missing", ev("session.update", session={}), MISSING, "session.type"),
    err("session_type_wrong", session(type="transcription"), VALUE, "session.type"),
    err("instructions_number", session(instructions=42), TYPE, "session.instructions"),
    err("instructions_900k_chars", session(instructions="Be brief. " * (HUGE // 10)), LONG,
        "session.instructions"),
    err("response_instructions_900k_chars", response(instructions="x" * HUGE), LONG, "response.instructions"),
    ok("instructions_unicode_oddities", session(instructions="\0 \u202e\ufeff e\u0301 \U0001f600"), UPDATED),
    err("modalities_string", session(output_modalities="audio"), TYPE, "session.output_modalities"),
    err("modalities_unknown", session(output_modalities=["video"]), VALUE, "session.output_modalities[0]"),
    err("modalities_empty", session(output_modalities=[]), VALUE, "session.output_modalities"),
    err("max_tokens_zero", session(max_output_tokens=0), VALUE, "session.max_output_tokens"),
    err("max_tokens_string", session(max_output_tokens="lots"), TYPE, "session.max_output_tokens"),
    err("audio_config_array", session(audio=[]), TYPE, "session.audio"),
    err("voice_number", out(voice=7), TYPE, "session.audio.output.voice"),
    ok("voice_unknown_name", out(voice="no-such-voice"), UPDATED),
    err("speed_out_of_range", out(speed=3), VALUE, "session.audio.output.speed"),
    err("speed_1e400", raw_json(out(speed=RAW), "1e400"), VALUE, f"{AUDIO}.output.speed", event_id=E),
    err("threshold_above_1", vad(threshold=1.5), VALUE, f"{VAD}.threshold"),
    err("threshold_negative", vad(threshold=-0.1), VALUE, f"{VAD}.threshold"),
    err("threshold_string", vad(threshold="0.5"), TYPE, f"{VAD}.threshold"),
    err("threshold_boolean", vad(threshold=True), TYPE, f"{VAD}.threshold"),
    err("silence_ms_float", vad(silence_duration_ms=500.5), TYPE, f"{VAD}.silence_duration_ms"),
    err("silence_ms_too_long", vad(silence_duration_ms=20_000), VALUE, f"{VAD}.silence_duration_ms"),
    err("padding_ms_negative", vad(prefix_padding_ms=-1), VALUE, f"{VAD}.prefix_padding_ms"),
    err("turn_detection_unknown", audio_in(turn_detection={"type": "manual"}), VALUE, f"{VAD}.type"),
    err("turn_detection_semantic", audio_in(turn_detection={"type": "semantic_vad"}), VALUE, f"{VAD}.type"),
    err("format_pcmu", audio_in(format={"type": "audio/pcmu"}), VALUE, f"{AUDIO}.input.format.type"),
    err("format_16khz", out(format={"rate": 16_000}), VALUE, f"{AUDIO}.output.format.rate"),
    err("format_beta_string", audio_in(format="pcm16"), TYPE, f"{AUDIO}.input.format"),
    err("transcription_string", audio_in(transcription="whisper"), TYPE, f"{AUDIO}.input.transcription"),
    # --- conversation.item.create --------------------------------------------------------------
    err("item_missing", ev("conversation.item.create"), MISSING, "item"),
    err("item_string", ev("conversation.item.create", item="hello"), TYPE, "item"),
    err("item_type_function_call", item(type="function_call"), VALUE, "item.type"),
    err("item_role_tool", item(role="tool"), VALUE, "item.role"),
    err("item_content_empty", item(content=[]), VALUE, "item.content"),
    err("item_content_object", item(content={"type": "input_text"}), TYPE, "item.content"),
    err("item_part_type_missing", item({"text": "hi"}), MISSING, "item.content[0].type"),
    err("item_text_number", text(1), TYPE, "item.content[0].text"),
    err("item_audio_bad_base64", item({"type": "input_audio", "audio": "%%%"}), B64, "item.content[0].audio"),
    err("item_id_65_chars", item(id="i" * 65), VALUE, "item.id"),
    err("item_id_900k_chars", item(id="i" * HUGE), VALUE, "item.id"),
    err("previous_item_id_number", {**item(), "previous_item_id": 1}, TYPE, "previous_item_id"),
    err("item_text_lone_surrogate", text("half a pair: \udc00"), JSON, event_id=None),
    err("item_text_900k_chars", text("y" * HUGE), LONG, "item.content"),
    ok("item_text_nul_and_emoji", text("nul \u0000 emoji \U0001f600 bom \ufeff"), "conversation.item.done"),
    # --- response.create / response.cancel / delete / truncate fields --------------------------
    err("response_string", ev("response.create", response="now"), TYPE, "response"),
    err("response_instructions_number", response(instructions=1), TYPE, "response.instructions"),
    err("response_conversation_id", response(conversation="conv_1"), VALUE, "response.conversation"),
    err("response_tokens_boolean", response(max_output_tokens=True), TYPE, "response.max_output_tokens"),
    err("response_tokens_4000_digits", raw_json(response(max_output_tokens=RAW), "9" * 4000), VALUE,
        "response.max_output_tokens", event_id=E),
    err("response_metadata_number", response(metadata={"a": 1}), TYPE, "response.metadata.a"),
    err("response_metadata_900k_key", response(metadata={"k" * HUGE: 1}), TYPE,
        f"response.metadata.{'k' * 61}..."),
    err("cancel_response_id_number", ev("response.cancel", response_id=1), TYPE, "response_id"),
    err("delete_item_id_missing", ev("conversation.item.delete"), MISSING, "item_id"),
    err("delete_item_id_number", ev("conversation.item.delete", item_id=5), TYPE, "item_id"),
    err("truncate_index_missing", ev(TRUNCATE, item_id="item_x", audio_end_ms=0), MISSING, "content_index"),
    err("truncate_index_string", truncate(content_index="0"), TYPE, "content_index"),
    err("truncate_end_negative", truncate(audio_end_ms=-5), VALUE, "audio_end_ms"),
    # --- binary frames and text frames that are not UTF-8 --------------------------------------
    ok("binary_valid_json", json.dumps(ev(CLEAR)).encode(), CLEARED),
    err("binary_random_bytes", rng.randbytes(1000), JSON),
    err("binary_invalid_utf8", b'{"type": "\xff\xfe"}', JSON),
    err("binary_cesu8_surrogate", b'{"type": "input_audio_buffer.clear", "event_id": "\xed\xa0\x80"}', JSON),
    err("binary_utf16_json", json.dumps(ev(CLEAR)).encode("utf-16"), JSON),
    err("binary_empty", b"", JSON),
    err("binary_2mb", sized(2 << 20).encode(), TOO_LARGE),
    Case("text_frame_invalid_utf8", (RawText(b'{"type": "\xff"}'),), close=1007),
    # --- sizes ---------------------------------------------------------------------------------
    ok("size_exactly_1mib", sized(MAX_MESSAGE_BYTES), CLEARED),
    err("size_1mib_plus_1", sized(MAX_MESSAGE_BYTES + 1), TOO_LARGE),
    err("size_2mb_append", append(bytes(3 * HUGE // 2), event_id=E), TOO_LARGE, event_id=None),
    Case("size_over_ws_limit", (sized(WS_MAX_BYTES + 1),), close=1009),
    ok("fragmented_valid_event", fragments(json.dumps(ev(CLEAR)), 7), CLEARED),
    err("fragmented_2mb", fragments(sized(2 << 20), 64 << 10), TOO_LARGE),
    # --- floods of invalid events --------------------------------------------------------------
    err("invalid_flood_at_budget", (ev("no.such"),) * MAX_INVALID_EVENTS, UNKNOWN, "type",
        errors=MAX_INVALID_EVENTS),
    Case(
        "invalid_flood_over_budget",
        ("{",) * (MAX_INVALID_EVENTS + 50),
        error=JSON,
        errors=(MAX_INVALID_EVENTS, MAX_INVALID_EVENTS + 1),
        close=1008,
        final_error="too_many_invalid_events",
    ),
]
# fmt: on
