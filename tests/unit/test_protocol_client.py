"""The Realtime wire protocol against the official ``openai`` types: session state and client events.

``SessionState`` must build ``session.created``/``session.updated`` events the official types
accept and apply ``session.update`` as OpenAI does (merging, atomic rejection). Client events:
frames produced by the SDK's ``RealtimeConnection`` (over a fake socket) must parse. Server
event builders are in ``test_protocol.py``; malformed input in ``test_protocol_errors.py``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, get_args

import pytest
from openai.resources.realtime.realtime import RealtimeConnection
from openai.types import realtime as oai
from pydantic import BaseModel

from serve_app.config import SessionDefaults
from serve_app.protocols.realtime import wire as rt
from serve_app.protocols.realtime.wire import ProtocolError, SessionState, parse_client_event
from tests.unit.protocol_helpers import B64, BASES, MAX, PCM, assert_official, no_extras, turn

# --- session state --------------------------------------------------------------------------

# GA servers send these in the session object; the request type (the schema of session.*) lacks them.
SESSION_EXTRAS = frozenset({"session.id", "session.object"})


def assert_session_event(event: dict[str, Any], cls: type[BaseModel]) -> Any:
    assert isinstance(assert_official(event, cls, SESSION_EXTRAS).session, oai.RealtimeSessionCreateRequest)
    full = oai.RealtimeSessionCreateResponse.model_validate(event["session"], strict=True)
    no_extras(full, "", set())
    return full


def _update(session: dict[str, Any]) -> rt.SessionUpdateEvent:
    event = {"type": "session.update", "event_id": "evt_1", "session": {"type": "realtime", **session}}
    return parse_client_event(json.dumps(event), MAX)


def test_session_created_from_config_defaults() -> None:
    defaults = SessionDefaults(
        instructions="Be brief.", voice="joe", turn_detection={"silence_duration_ms": 700}
    )
    state = SessionState.from_defaults("sess_1", defaults, model="voxray-cpu")
    session = assert_session_event(rt.session_created(state), oai.SessionCreatedEvent)
    assert rt.session_created(state.to_wire())["session"] == state.to_wire()
    assert (session.id, session.object, session.model) == ("sess_1", "realtime.session", "voxray-cpu")
    assert session.output_modalities == ["audio"] and session.instructions == "Be brief."
    assert session.audio.input.format.model_dump() == {"type": "audio/pcm", "rate": 24000}
    assert (session.audio.output.voice, session.audio.output.speed) == ("joe", 1.0)
    vad = session.audio.input.turn_detection
    assert (vad.type, vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms) == (
        "server_vad",
        0.5,
        300,
        700,
    )
    assert session.audio.input.transcription is None and session.max_output_tokens == "inf"
    assert (state.input_rate, state.output_rate, state.max_output_tokens, state.language) == (
        24000,
        24000,
        None,
        None,
    )
    assert state.create_response and state.interrupt_response
    assert SessionState().id.startswith("sess_")


def test_apply_update_merges_and_reports() -> None:
    state = SessionState(turn_detection=rt.ServerVad(silence_duration_ms=700))
    audio_in = {
        "transcription": {"model": "whisper-1", "language": "fr"},
        **turn(type="server_vad", threshold=0.8),
    }
    audio_out = {"voice": "marin", "speed": 1.2}
    update = {"instructions": "Parle.", "output_modalities": ["text"], "max_output_tokens": 200}
    state.apply_update(_update({**update, "audio": {"input": audio_in, "output": audio_out}}))
    assert state.language == "fr"
    assert (state.instructions, state.output_modalities, state.max_output_tokens) == ("Parle.", ["text"], 200)
    # The update's threshold replaces the current one; silence_duration_ms, not sent, is kept.
    assert state.turn_detection.threshold == 0.8 and state.turn_detection.silence_duration_ms == 700
    assert state.transcription.language == "fr" and (state.voice, state.speed) == ("marin", 1.2)
    session = assert_session_event(rt.session_updated(state), oai.SessionUpdatedEvent)
    assert session.audio.input.transcription.model == "whisper-1" and session.max_output_tokens == 200
    assert session.audio.input.turn_detection.threshold == 0.8

    state.apply_update(
        _update({"instructions": "", "audio": {"input": {"turn_detection": None, "transcription": None}}})
    )
    assert state.instructions == "" and state.turn_detection is None and state.transcription is None
    assert not state.create_response and not state.interrupt_response
    session = assert_session_event(rt.session_updated(state), oai.SessionUpdatedEvent)
    assert session.audio.input.turn_detection is None
    # Turning VAD back on takes the session's initial settings for the fields left out.
    state.apply_update(_update({"audio": {"input": turn(type="server_vad", create_response=False)}}))
    assert (state.turn_detection.silence_duration_ms, state.turn_detection.create_response) == (700, False)


def test_apply_update_leaves_unsent_fields_alone() -> None:
    state = SessionState(instructions="keep", voice="joe")
    before = state.to_wire()
    state.apply_update(
        _update({"model": "gpt-realtime", "tools": [], "tracing": "auto", "audio": {"output": {}}})
    )
    bare_config = _update({"instructions": None, "output_modalities": None}).session
    state.apply_update(bare_config)
    assert state.to_wire() == before
    state.apply_update(_update({"max_output_tokens": 50}))
    state.apply_update(_update({"max_output_tokens": "inf"}))
    assert state.max_output_tokens is None and state.to_wire()["max_output_tokens"] == "inf"


@pytest.mark.parametrize(
    ("audio", "kwargs", "code", "param"),
    [
        ({"input": {"format": {"type": "audio/pcmu"}}}, {}, "invalid_value", "input.format.type"),
        ({"output": {"format": {"type": "audio/pcma"}}}, {}, "invalid_value", "output.format.type"),
        ({"input": turn(type="semantic_vad")}, {}, "invalid_value", "input.turn_detection.type"),
        ({"output": {"voice": "cedar"}}, {"voice_locked": True}, "cannot_update_voice", "output.voice"),
    ],
)
def test_apply_update_rejects_unsupported_atomically(
    audio: dict[str, Any], kwargs: dict[str, Any], code: str, param: str
) -> None:
    state = SessionState()
    before = state.to_wire()
    with pytest.raises(ProtocolError) as info:
        state.apply_update(_update({"instructions": "changed", "audio": audio}), **kwargs)
    with pytest.raises(ProtocolError) as bare:
        state.apply_update(_update({"audio": audio}).session, event_id="evt_2", **kwargs)
    assert (bare.value.code, bare.value.event_id) == (code, "evt_2")
    assert (info.value.code, info.value.param) == (code, f"session.audio.{param}")
    assert info.value.event_id == "evt_1"
    assert state.to_wire() == before  # nothing applied
    assert_official(info.value.to_event(), oai.RealtimeErrorEvent)


def test_same_voice_when_locked_custom_voice_and_semantic_fallback() -> None:
    state = SessionState(voice="alloy")
    state.apply_update(_update({"audio": {"output": {"voice": "alloy"}}}), voice_locked=True)
    semantic = turn(type="semantic_vad", eagerness="high", interrupt_response=False)
    state.apply_update(_update({"audio": {"input": semantic}}), semantic_vad_fallback=True)
    assert state.turn_detection.type == "server_vad" and state.turn_detection.interrupt_response is False
    state.apply_update(_update({"audio": {"output": {"voice": {"id": "voice_123"}}}}))
    assert state.voice == "voice_123"


# --- client events: what the SDK sends ------------------------------------------------------


class _FakeSocket:
    """Stands in for the websocket under the SDK's ``RealtimeConnection``; keeps the frames."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def send(self, data: str, *args: Any, **kwargs: Any) -> None:
        self.frames.append(data)

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def sdk() -> tuple[RealtimeConnection, _FakeSocket]:
    socket = _FakeSocket()
    return RealtimeConnection(socket), socket  # type: ignore[arg-type]


# OpenAI's GA guide's session.update, plus settings voxray accepts and ignores.
GA_VAD = {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 400}
GA_SESSION: dict[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a helpful assistant.",
    "output_modalities": ["audio"],
    "max_output_tokens": "inf",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "voxray"},
            "turn_detection": {
                **GA_VAD,
                "create_response": True,
                "interrupt_response": True,
                "idle_timeout_ms": 6000,
            },
        },
        "output": {"format": {"type": "audio/pcm"}, "voice": "marin", "speed": 1.1},
    },
    "tools": [{"type": "function", "name": "lookup", "description": "d", "parameters": {"type": "object"}}],
    "tool_choice": "auto",
    "tracing": {"workflow_name": "w"},
    "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
    "include": ["item.input_audio_transcription.logprobs"],
    "prompt": None,
    "parallel_tool_calls": False,
}


def test_sdk_session_update_parses(sdk: tuple[RealtimeConnection, _FakeSocket]) -> None:
    connection, socket = sdk
    connection.session.update(session=GA_SESSION, event_id="evt_7")
    event = parse_client_event(socket.frames[-1], MAX)
    assert isinstance(event, rt.SessionUpdateEvent) and event.event_id == "evt_7"
    cfg = event.session
    assert cfg.instructions == "You are a helpful assistant." and cfg.max_output_tokens == "inf"
    vad = cfg.audio.input.turn_detection
    assert (vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms, vad.idle_timeout_ms) == (
        0.6,
        200,
        400,
        6000,
    )
    assert isinstance(cfg.audio.input.format, rt.AudioFormatPCM) and cfg.audio.output.speed == 1.1
    assert cfg.audio.input.transcription.language == "en" and cfg.tools[0]["name"] == "lookup"
    state = SessionState()
    state.apply_update(event)
    assert state.voice == "marin" and state.turn_detection.idle_timeout_ms == 6000
    assert_session_event(rt.session_updated(state.to_wire()), oai.SessionUpdatedEvent)


def test_sdk_model_objects_parse(sdk: tuple[RealtimeConnection, _FakeSocket]) -> None:
    """``connection.send(<SDK model>)`` serialises with ``to_json(exclude_unset=True)``."""
    connection, socket = sdk
    audio = {"input": {"turn_detection": None, "format": {"type": "audio/pcmu"}}}
    session = oai.RealtimeSessionCreateRequest(type="realtime", audio=audio)
    connection.send(oai.SessionUpdateEvent(type="session.update", session=session))
    connection.send(oai.ResponseCancelEvent(type="response.cancel", response_id="resp_9"))
    update, cancel = (parse_client_event(frame, MAX) for frame in socket.frames)
    audio_in = update.session.audio.input
    assert audio_in.turn_detection is None and "turn_detection" in audio_in.model_fields_set
    assert isinstance(audio_in.format, rt.AudioFormatPCMU)  # exposed; SessionState.apply_update rejects it
    assert cancel.response_id == "resp_9"


def test_sdk_buffer_conversation_and_response_events(sdk: tuple[RealtimeConnection, _FakeSocket]) -> None:
    connection, socket = sdk
    user_content = [
        {"type": "input_text", "text": "Hi"},
        {"type": "input_audio", "audio": B64, "transcript": "hey"},
    ]
    bot_content = [{"type": "output_text", "text": "Ok."}]
    connection.input_audio_buffer.append(audio=B64, event_id="a1")
    connection.input_audio_buffer.commit()
    connection.input_audio_buffer.clear()
    connection.output_audio_buffer.clear()
    connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": user_content}, previous_item_id="item_0"
    )
    connection.conversation.item.create(
        item={"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]}
    )
    connection.conversation.item.create(
        item={
            "id": "item_x",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": bot_content,
        }
    )
    connection.conversation.item.delete(item_id="item_x")
    connection.conversation.item.retrieve(item_id="item_x")
    connection.conversation.item.truncate(item_id="item_x", content_index=0, audio_end_ms=1500)
    connection.response.create()
    overrides = {"instructions": "Shout.", "output_modalities": ["text"], "max_output_tokens": 50}
    more = {"conversation": "none", "metadata": {"turn": "3"}, "audio": {"output": {"voice": "cedar"}}}
    connection.response.create(
        response={**overrides, **more, "input": [{"type": "item_reference", "id": "item_x"}]}
    )
    connection.response.cancel()
    events = [parse_client_event(frame, MAX) for frame in socket.frames]
    assert [e.type for e in events] == [json.loads(frame)["type"] for frame in socket.frames]
    append, *_, user, system, bot, delete, retrieve, truncate, bare, full, cancel = events
    assert append.audio == PCM and append.event_id == "a1"
    assert user.previous_item_id == "item_0" and user.item.content[1].audio == PCM
    assert user.item.text == "Hi hey" and system.item.text == "Be brief." and bot.item.text == "Ok."
    assert (bot.item.id, bot.item.role, system.item.role) == ("item_x", "assistant", "system")
    assert (
        delete.item_id == retrieve.item_id == truncate.item_id == "item_x" and truncate.audio_end_ms == 1500
    )
    assert bare.response is None and cancel.response_id is None
    params = full.response.model_dump(exclude_unset=True)
    assert params == {**overrides, **more, "input": [{"type": "item_reference", "id": "item_x"}]}


def test_every_official_client_event_type_parses() -> None:
    official = {
        get_args(cls.model_fields["type"].annotation)[0]
        for cls in get_args(get_args(oai.RealtimeClientEvent)[0])
    }
    assert official == set(rt.CLIENT_EVENT_TYPES)
    for name, event in BASES.items():  # the bases of test_protocol_errors.ERRORS are valid as they stand
        assert parse_client_event(json.dumps(event), MAX).type == event["type"], name


@pytest.mark.parametrize(
    ("sent", "parsed"), [(["audio"], ["audio"]), (["text"], ["text"]), (["text", "audio"], ["audio"])]
)
def test_output_modalities_normalised(sent: list[str], parsed: list[str]) -> None:
    assert _update({"output_modalities": sent}).session.output_modalities == parsed


def test_tolerates_unknown_keys_everywhere() -> None:
    vad = {"type": "server_vad", "z": True}
    event = _update({"future": 1, "audio": {"x": 1, "input": {"y": {}, "turn_detection": vad}}})
    assert event.session.audio.input.turn_detection.threshold == 0.5
    append = {"type": "input_audio_buffer.append", "audio": "AAAAAA==", "x": [1]}
    assert parse_client_event(json.dumps(append), MAX).audio == bytes(4)


def test_accepts_bytes_frames_and_unpadded_base64() -> None:
    unpadded = base64.b64encode(PCM[:4]).decode().rstrip("=")
    assert unpadded != base64.b64encode(PCM[:4]).decode()
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": unpadded})
    assert parse_client_event(frame.encode(), MAX).audio == PCM[:4]


def test_size_limit_counts_utf8_bytes() -> None:
    frame = json.dumps(
        {"type": "response.create", "response": {"instructions": "é" * 10}}, ensure_ascii=False
    )
    size = len(frame.encode())
    assert size > len(frame) and parse_client_event(frame, size).response.instructions == "é" * 10
    with pytest.raises(ProtocolError) as info:
        parse_client_event(frame, size - 1)
    assert (info.value.code, info.value.param, info.value.event_id) == ("message_too_large", None, None)
    assert str(size) in info.value.message
