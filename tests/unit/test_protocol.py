"""The Realtime wire protocol against the official ``openai`` types and the SDK's own client code.

Server events: each builder's output must validate as the official event class leniently (the
``RealtimeServerEvent`` union), strictly (no coercion), through the SDK's own receive path, and
with no key the official model lacks (the SDK's models accept extras silently, so that is checked
by hand). Client events: frames produced by the SDK's ``RealtimeConnection`` (over a fake socket)
must parse; every error path must give OpenAI's code, ``param`` and the client's ``event_id``.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass
from functools import partial
from typing import Any, get_args

import pytest
from openai._models import construct_type_unchecked
from openai.resources.realtime.realtime import RealtimeConnection
from openai.types import realtime as oai
from pydantic import BaseModel, TypeAdapter

from serve_app.config import SessionDefaults
from serve_app.protocol import realtime as rt
from serve_app.protocol.realtime import ProtocolError, SessionState, parse_client_event

SERVER_EVENT = TypeAdapter(oai.RealtimeServerEvent)
MAX = 1 << 20
PCM = b"\x01\x00\xff\x7f" * 240  # 480 samples, 20 ms at 24 kHz
B64 = base64.b64encode(PCM).decode()


def _no_extras(model: Any, path: str, allowed: set[str]) -> None:
    """Fails on any key the official model does not declare."""
    if isinstance(model, BaseModel):
        unexpected = {k for k in model.__pydantic_extra__ or {} if f"{path}.{k}".lstrip(".") not in allowed}
        assert not unexpected, f"{path}: keys unknown to {type(model).__name__}: {unexpected}"
        for name in type(model).model_fields:
            _no_extras(getattr(model, name), f"{path}.{name}", allowed)
    elif isinstance(model, list):
        for index, value in enumerate(model):
            _no_extras(value, f"{path}[{index}]", allowed)


def assert_official(
    event: dict[str, Any], cls: type[BaseModel], allowed_extras: frozenset[str] = frozenset()
):
    """Validates ``event`` as the official ``cls`` every way we can; returns the strict model."""
    wire = json.loads(json.dumps(event))  # what actually travels
    assert re.fullmatch(r"event_[0-9a-f]{20}", wire["event_id"])
    assert type(SERVER_EVENT.validate_python(wire)) is cls
    assert type(construct_type_unchecked(value=wire, type_=oai.RealtimeServerEvent)) is cls  # SDK's recv()
    strict = cls.model_validate(wire, strict=True)
    _no_extras(strict, "", set(allowed_extras))
    assert strict.model_dump(mode="json", exclude_unset=True) == wire
    return strict


# --- server event builders ------------------------------------------------------------------


@dataclass
class Msg:
    """Shaped like ``serve_app.conversation.Item``: what the builders take as an item."""

    id: str
    role: str
    text: str = ""
    modality: str = "text"
    status: str = "completed"


USER_AUDIO = Msg("item_u", "user", "hello there", "audio")
USER_PENDING = Msg("item_u", "user", "", "audio", "in_progress")
USER_TEXT = Msg("item_t", "user", "hi")
SYSTEM_TEXT = Msg("item_s", "system", "be brief")
BOT_AUDIO = Msg("item_a", "assistant", "Hi!", "audio", "incomplete")
BOT_TEXT = Msg("item_a", "assistant", "Hi!")
BOT_EMPTY = Msg("item_a", "assistant", "", "audio", "in_progress")
DONE_KW = {"status": "cancelled", "reason": "turn_detected", "output_tokens": 7, "timings": {"asr_ms": 12.34}}
FAILED_KW = {"status": "failed", "error": "LLM replica died", "metadata": {"turn": "3"}}
CREATED_KW = {"voice": "joe", "output_modalities": ["text"], "max_output_tokens": 120, "conversation_id": "c"}

BUILDERS: list[tuple[Any, tuple[Any, ...], type[BaseModel]]] = [
    (
        partial(rt.error_event, param="a.b", event_id="e1"),
        ("invalid_request_error", "x", "bad"),
        oai.RealtimeErrorEvent,
    ),
    (rt.error_event, ("server_error", None, "boom"), oai.RealtimeErrorEvent),
    (rt.speech_started, (120, "item_u"), oai.InputAudioBufferSpeechStartedEvent),
    (rt.speech_stopped, (900, "item_u"), oai.InputAudioBufferSpeechStoppedEvent),
    (rt.input_audio_buffer_committed, ("item_u", "item_0"), oai.InputAudioBufferCommittedEvent),
    (rt.input_audio_buffer_committed, ("item_u",), oai.InputAudioBufferCommittedEvent),
    (rt.input_audio_buffer_cleared, (), oai.InputAudioBufferClearedEvent),
    (rt.conversation_item_added, (USER_PENDING, "item_0"), oai.ConversationItemAdded),
    (rt.conversation_item_done, (USER_AUDIO, "item_0"), oai.ConversationItemDone),
    (rt.conversation_item_added, (USER_TEXT,), oai.ConversationItemAdded),
    (rt.conversation_item_added, (SYSTEM_TEXT,), oai.ConversationItemAdded),
    (rt.conversation_item_added, (BOT_EMPTY, "item_u"), oai.ConversationItemAdded),
    (rt.conversation_item_done, (BOT_AUDIO, "item_u"), oai.ConversationItemDone),
    (rt.conversation_item_done, (BOT_TEXT,), oai.ConversationItemDone),
    (rt.conversation_item_done, (rt.item_to_wire(USER_TEXT),), oai.ConversationItemDone),
    (rt.conversation_item_deleted, ("item_u",), oai.ConversationItemDeletedEvent),
    (rt.conversation_item_truncated, ("item_a", 0, 1500), oai.ConversationItemTruncatedEvent),
    (rt.transcription_delta, ("item_u", "hel"), oai.ConversationItemInputAudioTranscriptionDeltaEvent),
    (
        rt.transcription_completed,
        ("item_u", "hello", 1.23456),
        oai.ConversationItemInputAudioTranscriptionCompletedEvent,
    ),
    (rt.transcription_failed, ("item_u", "asr down"), oai.ConversationItemInputAudioTranscriptionFailedEvent),
    (rt.response_created, ("resp_1",), oai.ResponseCreatedEvent),
    (partial(rt.response_created, **CREATED_KW), ("resp_1",), oai.ResponseCreatedEvent),
    (rt.response_done, ("resp_1", BOT_TEXT), oai.ResponseDoneEvent),
    (partial(rt.response_done, **DONE_KW), ("resp_1", BOT_AUDIO), oai.ResponseDoneEvent),
    (partial(rt.response_done, **FAILED_KW), ("resp_1",), oai.ResponseDoneEvent),
    (rt.response_output_item_added, ("resp_1", BOT_EMPTY), oai.ResponseOutputItemAddedEvent),
    (rt.response_output_item_done, ("resp_1", BOT_AUDIO), oai.ResponseOutputItemDoneEvent),
    (rt.response_content_part_added, ("resp_1", "item_a"), oai.ResponseContentPartAddedEvent),
    (
        partial(rt.response_content_part_added, audio=False),
        ("resp_1", "item_a"),
        oai.ResponseContentPartAddedEvent,
    ),
    (rt.response_content_part_done, ("resp_1", "item_a", "Hi!"), oai.ResponseContentPartDoneEvent),
    (
        partial(rt.response_content_part_done, audio=False),
        ("resp_1", "item_a", "Hi!"),
        oai.ResponseContentPartDoneEvent,
    ),
    (rt.response_output_audio_delta, ("resp_1", "item_a", PCM), oai.ResponseAudioDeltaEvent),
    (rt.response_output_audio_done, ("resp_1", "item_a"), oai.ResponseAudioDoneEvent),
    (rt.response_transcript_delta, ("resp_1", "item_a", "Hi"), oai.ResponseAudioTranscriptDeltaEvent),
    (rt.response_transcript_done, ("resp_1", "item_a", "Hi!"), oai.ResponseAudioTranscriptDoneEvent),
    (rt.response_transcript_delta, ("resp_1", "item_a", "Hi", False), oai.ResponseTextDeltaEvent),
    (rt.response_transcript_done, ("resp_1", "item_a", "Hi!", False), oai.ResponseTextDoneEvent),
]


@pytest.mark.parametrize(
    ("build", "args", "cls"), BUILDERS, ids=[f"{i}-{b[2].__name__}" for i, b in enumerate(BUILDERS)]
)
def test_builder_matches_official_type(build: Any, args: tuple[Any, ...], cls: type[BaseModel]) -> None:
    event = build(*args)
    assert assert_official(event, cls).type == event["type"]


@pytest.mark.parametrize(
    ("item", "content"),
    [
        (USER_AUDIO, [{"type": "input_audio", "transcript": "hello there"}]),
        (USER_PENDING, [{"type": "input_audio", "transcript": None}]),
        (USER_TEXT, [{"type": "input_text", "text": "hi"}]),
        (SYSTEM_TEXT, [{"type": "input_text", "text": "be brief"}]),
        (BOT_AUDIO, [{"type": "output_audio", "transcript": "Hi!"}]),
        (BOT_TEXT, [{"type": "output_text", "text": "Hi!"}]),
        (BOT_EMPTY, []),
    ],
)
def test_items_on_the_wire(item: Msg, content: list[dict[str, Any]]) -> None:
    wire = rt.item_to_wire(item)
    header = {"id": item.id, "object": "realtime.item", "type": "message", "status": item.status}
    assert wire == {**header, "role": item.role, "content": content}
    assert rt.item_to_wire(wire) == wire


def test_builder_field_values() -> None:
    audio = assert_official(rt.response_output_audio_delta("r", "i", PCM), oai.ResponseAudioDeltaEvent)
    assert base64.b64decode(audio.delta) == PCM
    assert (audio.output_index, audio.content_index, audio.response_id, audio.item_id) == (0, 0, "r", "i")
    done = assert_official(rt.response_done("resp_1", BOT_AUDIO, **DONE_KW), oai.ResponseDoneEvent).response
    assert (
        done.status == done.status_details.type == "cancelled"
        and done.status_details.reason == "turn_detected"
    )
    assert done.output[0].content[0].transcript == "Hi!" and done.output_modalities == ["audio"]
    assert (done.usage.output_tokens, done.usage.input_tokens, done.usage.total_tokens) == (7, None, None)
    assert rt.parse_timings(done.metadata) == {"asr_ms": 12.3}
    failed = assert_official(rt.response_done("resp_1", **FAILED_KW), oai.ResponseDoneEvent).response
    assert failed.status_details.error.message == "LLM replica died" and failed.output == []
    assert failed.status_details.error.type == "server_error" and failed.metadata == {"turn": "3"}
    created = assert_official(rt.response_created("resp_1", **CREATED_KW), oai.ResponseCreatedEvent).response
    assert created.status == "in_progress" and created.audio.output.voice == "joe"
    assert created.output_modalities == ["text"] and created.max_output_tokens == 120
    asr = rt.transcription_completed("i", "hello", 1.23456)
    completed = assert_official(asr, oai.ConversationItemInputAudioTranscriptionCompletedEvent)
    assert completed.usage.type == "duration" and completed.usage.seconds == pytest.approx(1.235)
    error = rt.error_event("server_error", "x", "bad", param="a.b", event_id="e1")
    fields = assert_official(error, oai.RealtimeErrorEvent).error.model_dump()
    assert fields == {"type": "server_error", "code": "x", "message": "bad", "param": "a.b", "event_id": "e1"}


def test_ids_are_fresh_and_prefixed() -> None:
    assert len({rt.input_audio_buffer_cleared()["event_id"] for _ in range(200)}) == 200
    assert re.fullmatch(r"item_[0-9a-f]{20}", rt.new_id("item")) and rt.new_id("resp") != rt.new_id("resp")


def test_timings_round_trip_through_metadata() -> None:
    metadata = rt.timings_metadata({"asr_ms": 12.34, "first_audio_ms": 80})
    assert metadata == {"voxray.asr_ms": "12.3", "voxray.first_audio_ms": "80.0"}
    assert rt.parse_timings({"topic": "x", "voxray.tts_ms": "5.0", "voxray.note": "y"}) == {"tts_ms": 5.0}
    assert rt.parse_timings(None) == {}


def test_response_usage_leaves_unknown_counts_out() -> None:
    assert rt.response_usage() == {}
    assert rt.response_usage(3, 4)["total_tokens"] == 7 and "total_tokens" not in rt.response_usage(
        output_tokens=4
    )


# --- a whole response, as serve_app.response emits it ----------------------------------------

OFFICIAL_BY_TYPE = {cls.model_fields["type"].annotation.__args__[0]: cls for _, _, cls in BUILDERS}


@pytest.mark.parametrize("audio", [True, False])
@pytest.mark.parametrize(("status", "reason"), [("completed", None), ("cancelled", "turn_detected")])
def test_response_sequence(audio: bool, status: str, reason: str | None) -> None:
    item = Msg("item_a", "assistant", "", "audio" if audio else "text", "in_progress")
    rid = rt.new_id("resp")
    events = [
        rt.response_created(rid, output_modalities=["audio" if audio else "text"]),
        rt.response_output_item_added(rid, item),
        rt.conversation_item_added(item, "item_u"),
        rt.response_content_part_added(rid, item.id, audio=audio),
    ]
    for piece in ["Hello", " there."]:
        events.append(rt.response_transcript_delta(rid, item.id, piece, audio=audio))
        if audio:
            events.append(rt.response_output_audio_delta(rid, item.id, PCM))
    item.text, item.status = "Hello there.", "completed" if status == "completed" else "incomplete"
    events += [rt.response_transcript_done(rid, item.id, item.text, audio)]
    events += [rt.response_output_audio_done(rid, item.id)] if audio else []
    events += [
        rt.response_content_part_done(rid, item.id, item.text, audio=audio),
        rt.response_output_item_done(rid, item),
        rt.conversation_item_done(item, "item_u"),
        rt.response_done(rid, item, status=status, reason=reason, timings={"total_ms": 900.0}),
    ]
    parsed = [assert_official(event, OFFICIAL_BY_TYPE[event["type"]]) for event in events]
    assert {getattr(p, "response_id", rid) for p in parsed} == {rid}
    done = parsed[-1].response
    assert done.output[0].content[0].model_dump(exclude_none=True) == (
        {"type": "output_audio", "transcript": "Hello there."}
        if audio
        else {"type": "output_text", "text": "Hello there."}
    )
    assert (
        done.output_modalities == (["audio"] if audio else ["text"]) and done.output[0].status == item.status
    )
    assert (done.status_details.reason if done.status_details else None) == reason


# --- session state --------------------------------------------------------------------------

# GA servers send these in the session object; the request type (the schema of session.*) lacks them.
SESSION_EXTRAS = frozenset({"session.id", "session.object"})


def assert_session_event(event: dict[str, Any], cls: type[BaseModel]) -> Any:
    assert isinstance(assert_official(event, cls, SESSION_EXTRAS).session, oai.RealtimeSessionCreateRequest)
    full = oai.RealtimeSessionCreateResponse.model_validate(event["session"], strict=True)
    _no_extras(full, "", set())
    return full


def _update(session: dict[str, Any]) -> rt.SessionUpdateEvent:
    event = {"type": "session.update", "event_id": "evt_1", "session": {"type": "realtime", **session}}
    return parse_client_event(json.dumps(event), MAX)


def _turn(**turn_detection: Any) -> dict[str, Any]:
    return {"turn_detection": turn_detection}


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
        **_turn(type="server_vad", threshold=0.8),
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
    state.apply_update(_update({"audio": {"input": _turn(type="server_vad", create_response=False)}}))
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
        ({"input": _turn(type="semantic_vad")}, {}, "invalid_value", "input.turn_detection.type"),
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
    semantic = _turn(type="semantic_vad", eagerness="high", interrupt_response=False)
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
    for name, event in BASES.items():  # the bases of ERRORS below are valid as they stand
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


# --- client events: errors ------------------------------------------------------------------

USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
BASES: dict[str, dict[str, Any]] = {
    "session": {"type": "session.update", "session": {"type": "realtime"}},
    "vad": {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": _turn(type="server_vad")}},
    },
    "append": {"type": "input_audio_buffer.append", "audio": "AAAAAA=="},
    "item": {"type": "conversation.item.create", "item": USER_ITEM},
    "response": {"type": "response.create", "response": {}},
    "cancel": {"type": "response.cancel"},
    "delete": {"type": "conversation.item.delete", "item_id": "i"},
    "truncate": {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 0},
}


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
