"""The OpenAI Realtime (GA) adapter: client events → engine calls; engine events → server events.

One :class:`RealtimeSession` per WebSocket. It owns the wire-shaped session state
(``SessionState``, which is also the engine's settings), parses each client message, calls
the protocol-neutral engine (``serve_app.engine.session.VoiceSession``), and renders every
engine event as the Realtime server events a client expects. Bad client input becomes an
``error`` event and the session carries on, as the OpenAI Realtime API does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.response import ReplyOverrides
from serve_app.engine.session import VoiceSession
from serve_app.observability.recorder import SessionRecorder, record_error
from serve_app.protocols.realtime import client_events as ce
from serve_app.protocols.realtime import wire as rt
from serve_app.protocols.realtime.items import (
    ItemEvents,
    check_text_length,
    refusals_as_errors,
    session_preset,
)
from serve_app.server.limits import CloseConnection, InvalidEventBudget

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
PROTOCOL = "realtime"


class RealtimeSession:
    """One OpenAI Realtime conversation over one WebSocket.

    Args:
        config: The application config (session defaults and limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        emit: Sends one server event to the client.
        vad_batcher: Judges ``vad``'s audio together with other sessions' (the Ingress
            shares one); ``None`` runs the VAD in place.
    """

    protocol = PROTOCOL

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.state = rt.SessionState.from_defaults(rt.new_id("sess"), config.session)
        self.id = self.state.id
        self._config = config
        self._emit = emit
        recorder = SessionRecorder(self.id, PROTOCOL)
        self.engine = VoiceSession(
            config, models, vad, self.state, self._on_engine_event, recorder.observe, vad_batcher
        )
        self._items = ItemEvents(self.engine, self._send, config.limits)
        self._invalid_events = InvalidEventBudget(config.limits.max_invalid_events)
        self._handlers: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            ce.SessionUpdateEvent: self._on_session_update,
            ce.InputAudioBufferAppendEvent: self._on_audio_append,
            ce.InputAudioBufferCommitEvent: self._on_audio_commit,
            ce.InputAudioBufferClearEvent: self._on_audio_clear,
            ce.ConversationItemCreateEvent: self._items.create,
            ce.ConversationItemDeleteEvent: self._items.delete,
            ce.ConversationItemTruncateEvent: self._items.truncate,
            ce.ResponseCreateEvent: self._on_response_create,
            ce.ResponseCancelEvent: self._on_response_cancel,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        """Greet the client with ``session.created``.

        Args:
            preset: A ``session`` object (the ``session.update`` shape) to apply first, e.g.
                the one a client secret was minted with. It was validated when the secret was
                made; should it fail now, the session starts from the defaults and says why.
        """
        if preset is not None:
            try:
                self.state.apply_update(session_preset(preset))
                self.engine.settings_changed()
            except rt.ProtocolError as exc:
                await self._send(exc.to_event())
        await self._send(rt.session_created(self.state))

    async def close(self) -> None:
        """Cancel everything in flight; the connection is gone."""
        await self.engine.close()

    @property
    def responding(self) -> bool:
        """Whether a response is being generated or waited for."""
        return self.engine.responding

    def closing_message(self, close: CloseConnection) -> list[dict[str, Any]]:
        """The ``error`` event sent just before the server closes the connection (counted)."""
        record_error(self.id, PROTOCOL, close.error_type, close.error_code, close.message)
        return realtime_refusal(close)

    async def _send(self, event: dict[str, Any]) -> None:
        if event["type"] == "error":
            error = event["error"]
            record_error(self.id, PROTOCOL, str(error["type"]), str(error["code"]), str(error["message"]))
        await self._emit(event)

    # -- client events -----------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """Parse and act on one client message; protocol errors become ``error`` events.

        Raises:
            CloseConnection: The client sent more invalid events than ``limits.max_invalid_events``
                within a minute; the connection must end.
        """
        try:
            event = rt.parse_client_event(raw, max_bytes=self._config.limits.max_message_bytes)
            handler = self._handlers.get(type(event))
            if handler is None:
                raise rt.ProtocolError(
                    "unsupported_event_type",
                    f"voxray does not support '{event.type}' yet.",
                    event_id=event.event_id,
                )
            await handler(event)
        except rt.ProtocolError as exc:
            await self._send(exc.to_event())
            self._invalid_events.spend()
        except Exception as exc:  # a bug must cost one error event, never the connection
            logger.exception("session %s: unexpected error handling a client event", self.id)
            await self._send(rt.error_event("server_error", "internal_error", f"Internal error: {exc}"))

    async def _on_session_update(self, event: ce.SessionUpdateEvent) -> None:
        check_text_length(
            event.session.instructions, "session.instructions", self._config.limits, event.event_id
        )
        self.state.apply_update(event.session, event_id=event.event_id)
        self.engine.settings_changed()
        await self._send(rt.session_updated(self.state))

    async def _on_audio_append(self, event: ce.InputAudioBufferAppendEvent) -> None:
        with refusals_as_errors(event.event_id):
            await self.engine.append_audio(event.audio)

    async def _on_audio_commit(self, event: ce.InputAudioBufferCommitEvent) -> None:
        with refusals_as_errors(event.event_id):
            await self.engine.commit_input()

    async def _on_audio_clear(self, event: ce.InputAudioBufferClearEvent) -> None:
        await self.engine.clear_input()

    async def _on_response_create(self, event: ce.ResponseCreateEvent) -> None:
        params = event.response
        overrides = None
        if params is not None:
            check_text_length(
                params.instructions, "response.instructions", self._config.limits, event.event_id
            )
            output = params.audio.output if params.audio else None
            overrides = ReplyOverrides(
                instructions=params.instructions,
                output_modalities=list(params.output_modalities) if params.output_modalities else None,
                max_output_tokens=params.max_output_tokens,
                voice=output.voice if output else None,
            )
        with refusals_as_errors(event.event_id):
            await self.engine.create_response(overrides)

    async def _on_response_cancel(self, event: ce.ResponseCancelEvent) -> None:
        with refusals_as_errors(event.event_id):
            await self.engine.cancel_response("client_cancelled")

    # -- engine events -----------------------------------------------------------------------

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        for wire in render(event):
            await self._send(wire)


def realtime_refusal(close: CloseConnection) -> list[dict[str, Any]]:
    """The ``error`` event that explains a close (or a refused handshake) to a Realtime client."""
    return [close.error]


def render(event: ev.EngineEvent) -> list[dict[str, Any]]:
    """The Realtime server events that say what ``event`` says (none for engine-only events)."""
    match event:
        case ev.SpeechStarted(item_id=item_id, audio_start_ms=start_ms):
            return [rt.speech_started(start_ms, item_id)]
        case ev.SpeechStopped(item_id=item_id, audio_end_ms=end_ms):
            return [rt.speech_stopped(end_ms, item_id)]
        case ev.InputCommitted(item=item, previous_item_id=previous):
            return [
                rt.input_audio_buffer_committed(item.id, previous),
                rt.conversation_item_added(item, previous_item_id=previous),
            ]
        case ev.InputCleared():
            return [rt.input_audio_buffer_cleared()]
        case ev.TranscriptFinal(item=item, text=text):
            return [
                rt.transcription_completed(item.id, text, item.audio_ms / 1000),
                rt.conversation_item_done(item),
            ]
        case ev.TranscriptFailed(item=item, message=message):
            return [rt.transcription_failed(item.id, message)]
        case ev.ErrorOccurred(type=error_type, code=code, message=message):
            return [rt.error_event(error_type, code, message)]
        case ev.ReplyStarted(response_id=rid, item=item, audio=audio):
            return [
                rt.response_created(rid),
                rt.response_output_item_added(rid, item),
                rt.conversation_item_added(item, previous_item_id=None),
                rt.response_content_part_added(rid, item.id, audio=audio),
            ]
        case ev.ReplyText(response_id=rid, item_id=item_id, text=text, audio=audio):
            return [rt.response_transcript_delta(rid, item_id, text, audio=audio)]
        case ev.ReplyAudio(response_id=rid, item_id=item_id, pcm16=pcm16):
            return [rt.response_output_audio_delta(rid, item_id, pcm16)]
        case ev.ReplyDone():
            return _reply_done(event)
    return []  # TranscriptPartial (Realtime's deltas are appends, not revisions), StageMeasured


def _reply_done(done: ev.ReplyDone) -> list[dict[str, Any]]:
    rid, item, text = done.response_id, done.item, done.spoken_text
    events = []
    if done.status == "completed":
        events.append(rt.response_transcript_done(rid, item.id, text, audio=done.audio))
        if done.audio:
            events.append(rt.response_output_audio_done(rid, item.id))
    return [
        *events,
        rt.response_content_part_done(rid, item.id, text, audio=done.audio),
        rt.response_output_item_done(rid, item),
        rt.conversation_item_done(item),
        rt.response_done(
            rid,
            item,
            status=done.status,
            reason=done.reason,
            error=done.error,
            output_tokens=done.output_tokens,
            timings=done.timings,
        ),
    ]
