"""The Realtime wire protocol against the official ``openai`` types: the server events voxray sends.

Each builder's output must validate as the official event class leniently (the
``RealtimeServerEvent`` union), strictly (no coercion), through the SDK's own receive path, and
with no key the official model lacks (the SDK's models accept extras silently, so that is checked
by hand); so must a whole response as ``serve_app.engine.response`` emits it. Session state and the
client events the SDK sends are in ``test_protocol_client.py``; malformed client events and the
errors they map to in ``test_protocol_errors.py``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from openai.types import realtime as oai
from pydantic import BaseModel

from serve_app.protocols.realtime import wire as rt
from tests.unit.protocol_helpers import PCM, assert_official

# --- server event builders ------------------------------------------------------------------


@dataclass
class Msg:
    """Shaped like ``serve_app.engine.conversation.Item``: what the builders take as an item."""

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


# --- a whole response, as serve_app.engine.response emits it ----------------------------------------

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
