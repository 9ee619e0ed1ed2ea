"""The Realtime wire protocol: malformed client events and the errors they map to.

Every error path must give OpenAI's code, ``param`` and the client's ``event_id``, in an
``error`` event the official ``openai`` types accept, worded as OpenAI words it and never
echoing a huge input back.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from openai.types import realtime as oai

from serve_app.protocols.realtime import wire as rt
from serve_app.protocols.realtime.wire import ProtocolError, parse_client_event
from tests.unit.protocol_helpers import BASES, MAX, assert_official

# --- client events: errors ------------------------------------------------------------------


class _Delete:
    """Marks a key to remove; a stable repr keeps the test ids stable."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
VAD = "session.audio.input.turn_detection"


def _with(base: str, path: str, value: Any) -> dict[str, Any]:
    """``BASES[base]`` plus an ``event_id``, with ``value`` put at ``path`` (``a.b[0].c``)."""
    event = {"event_id": "evt_e", **copy.deepcopy(BASES[base])}
    *parents, last = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    node: Any = event
    for key in parents:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return event


# (base event, where to put the bad value, the value, expected code, expected param: None for `where`,
# ".x" / "[i]" for a path below `where`, else the full path)
ERRORS: list[tuple[str, str, Any, str, str | None]] = [
    ("session", "session", DELETE, "missing_required_parameter", None),
    ("session", "session.type", DELETE, "missing_required_parameter", None),
    ("session", "session.type", "transcription", "invalid_value", None),
    ("session", "session.instructions", 5, "invalid_type", None),
    ("session", "session.output_modalities", "audio", "invalid_type", None),
    ("session", "session.output_modalities", ["video"], "invalid_value", "[0]"),
    ("session", "session.output_modalities", [], "invalid_value", None),
    ("session", "session.max_output_tokens", "lots", "invalid_type", None),
    ("session", "session.max_output_tokens", True, "invalid_type", None),
    ("session", "session.max_output_tokens", 0, "invalid_value", None),
    ("session", "session.audio", [], "invalid_type", None),
    ("session", "session.audio.input.format", "pcm16", "invalid_type", None),
    ("session", "session.audio.input.format", {"type": "audio/opus"}, "invalid_value", ".type"),
    ("session", "session.audio.output.format", {"rate": 16000}, "invalid_value", ".rate"),
    ("session", VAD, {"threshold": 0.5}, "missing_required_parameter", ".type"),
    ("session", VAD, {"type": "manual"}, "invalid_value", ".type"),
    ("session", VAD, {"type": "semantic_vad", "eagerness": "x"}, "invalid_value", ".eagerness"),
    ("vad", f"{VAD}.threshold", "0.5", "invalid_type", None),
    ("vad", f"{VAD}.threshold", 1.5, "invalid_value", None),
    ("vad", f"{VAD}.silence_duration_ms", 500.5, "invalid_type", None),
    ("vad", f"{VAD}.silence_duration_ms", -1, "invalid_value", None),
    ("vad", f"{VAD}.create_response", 1, "invalid_type", None),
    ("vad", f"{VAD}.idle_timeout_ms", "soon", "invalid_type", None),
    ("session", "session.audio.input.transcription", "whisper", "invalid_type", None),
    ("session", "session.audio.input.transcription.language", 7, "invalid_type", None),
    ("session", "session.audio.output.voice", 7, "invalid_type", None),
    ("session", "session.audio.output.speed", 3, "invalid_value", None),
    ("session", "session.tools", {}, "invalid_type", None),
    ("append", "audio", DELETE, "missing_required_parameter", None),
    ("append", "audio", 12, "invalid_type", None),
    ("append", "audio", "not base64!", "invalid_base64", None),
    ("append", "audio", "AAAAA", "invalid_base64", None),
    ("append", "audio", "AAAA", "invalid_value", None),  # 3 bytes: not whole 16-bit samples
    ("append", "event_id", 5, "invalid_type", None),
    ("item", "item", DELETE, "missing_required_parameter", None),
    ("item", "item", "hello", "invalid_type", None),
    ("item", "item.type", "function_call", "invalid_value", None),
    ("item", "item.role", "tool", "invalid_value", None),
    ("item", "item.role", "assistant", "invalid_value", "item.content[0].type"),  # input_text for assistant
    ("item", "item.content", DELETE, "missing_required_parameter", None),
    ("item", "item.content", [], "invalid_value", None),
    ("item", "item.content[0].type", DELETE, "missing_required_parameter", None),
    ("item", "item.content[0]", {"type": "input_image", "image_url": "x"}, "invalid_value", ".type"),
    ("item", "item.content[0].text", 1, "invalid_type", None),
    ("item", "item.content[1]", {"type": "input_audio"}, "missing_required_parameter", ".audio"),
    ("item", "item.content[0]", {"type": "input_audio", "audio": "%%%"}, "invalid_base64", ".audio"),
    ("item", "previous_item_id", 1, "invalid_type", None),
    ("response", "response", "now", "invalid_type", None),
    ("response", "response.conversation", "conv_1", "invalid_value", None),
    ("response", "response.output_modalities", ["audio", "video"], "invalid_value", "[1]"),
    ("response", "response.metadata", {"a": 1}, "invalid_type", ".a"),
    ("response", "response.metadata", {str(i): "v" for i in range(17)}, "invalid_value", None),
    ("response", "response.audio.output.voice", 7, "invalid_type", None),
    ("cancel", "response_id", 1, "invalid_type", None),
    ("delete", "item_id", DELETE, "missing_required_parameter", None),
    ("truncate", "content_index", DELETE, "missing_required_parameter", None),
    ("truncate", "content_index", "0", "invalid_type", None),
    ("truncate", "audio_end_ms", -5, "invalid_value", None),
]


def _check_error(raw: str | bytes, code: str, param: str | None, event_id: str | None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_event(raw, MAX)
    error = info.value
    assert (error.code, error.param, error.event_id, error.type) == (
        code,
        param,
        event_id,
        "invalid_request_error",
    )
    if code in ("missing_required_parameter", "invalid_type"):
        assert f"'{param}'" in error.message
    assert error.message.endswith("."), error.message
    event = assert_official(error.to_event(), oai.RealtimeErrorEvent).error
    assert (event.code, event.param, event.event_id, event.message) == (code, param, event_id, error.message)
    return error


@pytest.mark.parametrize(
    ("base", "where", "value", "code", "param"), ERRORS, ids=[f"{e[1]}={e[2]!r:.20}" for e in ERRORS]
)
def test_field_errors(base: str, where: str, value: Any, code: str, param: str | None) -> None:
    event = _with(base, where, value)
    expected = where + param if param and param[0] in ".[" else param or where
    _check_error(json.dumps(event), code, expected, None if where == "event_id" else "evt_e")


@pytest.mark.parametrize(
    ("raw", "code", "param", "event_id"),
    [
        ("{nope", "invalid_json", None, None),
        ('{"type": "session.update", "x": NaN}', "invalid_json", None, None),
        (b'{"type": "\xff"}', "invalid_json", None, None),
        ("[" * 100_000, "invalid_json", None, None),
        ("[1, 2]", "invalid_json", None, None),
        ('"hello"', "invalid_json", None, None),
        ("", "invalid_json", None, None),
        ('{"event_id": "evt_e"}', "missing_required_parameter", "type", "evt_e"),
        ('{"type": 3, "event_id": "evt_e"}', "invalid_type", "type", "evt_e"),
        ('{"type": "session.create", "event_id": "evt_e"}', "unknown_event_type", "type", "evt_e"),
        ('{"type": "transcription_session.update"}', "unknown_event_type", "type", None),
        # Not Unicode: unpaired surrogates (escaped, or CESU-8 bytes) and non-UTF-8 binary frames.
        ('{"type": "input_audio_buffer.clear", "event_id": "\\ud800"}', "invalid_json", None, None),
        ('{"type": "conversation.item.create", "x": {"\\udfff": 1}}', "invalid_json", None, None),
        (b'{"type": "input_audio_buffer.clear", "event_id": "\xed\xa0\x80"}', "invalid_json", None, None),
        ('{"type": "input_audio_buffer.clear"}'.encode("utf-16"), "invalid_json", None, None),
        # An over-long event_id is the error itself, and is not echoed back.
        (
            json.dumps({"type": "input_audio_buffer.clear", "event_id": "e" * 513}),
            "invalid_value",
            "event_id",
            None,
        ),
    ],
)
def test_message_errors(raw: str | bytes, code: str, param: str | None, event_id: str | None) -> None:
    _check_error(raw, code, param, event_id)


def test_surrogate_pairs_nul_and_long_ids_are_fine() -> None:
    """Only *unpaired* surrogates are refused; an escaped pair is one character, NUL is text."""
    raw = '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
    raw += '"content": [{"type": "input_text", "text": "\\ud83d\\ude00 a\\u0000b \\\\ud800"}]}}'
    assert parse_client_event(raw, MAX).item.text == "\U0001f600 a\x00b \\ud800"
    event_id = "e" * rt.MAX_EVENT_ID_CHARS
    assert (
        parse_client_event(json.dumps({"type": "response.cancel", "event_id": event_id}), MAX).event_id
        == event_id
    )


def test_errors_never_echo_a_huge_input() -> None:
    """Values, keys and types from the client are quoted only in part: an error stays small."""
    huge = "k" * 900_000
    for event in [
        {"type": huge},
        {"type": "response.create", "event_id": "e", "response": {"metadata": {huge: 1}}},
        {"type": "response.create", "response": {"conversation": huge}},
        {"type": "input_audio_buffer.clear", "event_id": huge},
    ]:
        with pytest.raises(ProtocolError) as info:
            parse_client_event(json.dumps(event), 1 << 21)
        assert len(json.dumps(info.value.to_event())) < 1000, info.value.code
    error = _check_error(
        json.dumps({"type": "response.create", "event_id": "e", "response": {"metadata": {huge: 1}}}),
        "invalid_type",
        "response.metadata." + "k" * (rt.MAX_PARAM_KEY_CHARS - 3) + "...",
        "e",
    )
    assert huge not in error.message
    raw = '{"type": "response.create", "response": {"max_output_tokens": ' + "9" * 4000 + "}}"
    error = _check_error(raw, "invalid_value", "response.max_output_tokens", None)
    assert "(4000 digits)" in error.message and len(error.message) < 200


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "x.y"}, "Invalid value: 'x.y'. Supported values are: 'session.update', "),
        ({"type": "session.update", "session": {}}, "Missing required parameter: 'session.type'."),
        (
            _with("session", "session.instructions", 5),
            "Invalid type for 'session.instructions': expected a string, but",
        ),
        (
            _with("session", "session.type", "transcription"),
            "Invalid value: 'transcription'. Supported values are:",
        ),
        (_with("append", "audio", "@@@@"), "Invalid 'audio': expected base64-encoded audio data."),
    ],
)
def test_error_messages_follow_openai_wording(event: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_event(json.dumps(event), MAX)
    assert info.value.message.startswith(expected)
