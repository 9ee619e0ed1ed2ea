"""What the two gRPC voice streams share: one engine conversation per bidirectional stream.

Seed 002's ``voice_workflow.VoiceGateway/StreamAudio`` (``gateway.py``) and voxray's own
``voxray.voice.v1.VoxrayVoice/Converse`` (``converse.py``) both start with a config message,
then carry audio and typed turns into the protocol-neutral engine
(``serve_app.engine.session.VoiceSession``) and render its events as their own messages.
:class:`VoiceStreamSession` is that common part, a ``GrpcSession`` for ``GrpcStream``:

- The config comes first: anything else first ends the call with ``INVALID_ARGUMENT``; a
  message over ``limits.max_message_bytes`` ends it with ``RESOURCE_EXHAUSTED``.
- Mistakes the stream survives (a second config, empty text, a refused request) become the
  protocol's error message; more than ``limits.max_invalid_events`` a minute end the call.
- Barge-in: the engine stops the reply when the person speaks over it. From the moment the
  speech is detected no more of that reply's audio or text goes out, even what the engine
  had already produced, and the reply's end is reported as interrupted.
- Half-close: the utterance in progress ends as server VAD would end it, its reply is
  sent, then the call ends OK.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import grpc
from google.protobuf.message import Message

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.conversation import Item, new_id
from serve_app.engine.errors import RequestRefused
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.session import VoiceSession
from serve_app.engine.settings import VoiceSettings
from serve_app.engine.turn import TurnPhase
from serve_app.observability.recorder import SessionRecorder, record_error
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument
from serve_app.protocols.voice_grpc.audio import InputAudio
from serve_app.server.limits import InvalidEventBudget

Emit = Callable[[Message], Awaitable[None]]
Withdraw = Callable[[Callable[[Message], bool]], int]
Handler = Callable[[Any], Awaitable[None]]


class ReplyGate:
    """Which reply is being sent, and which were stopped (their late events are dropped)."""

    def __init__(self) -> None:
        self.active: str | None = None
        self._stopped: set[str] = set()

    def stop_active(self) -> None:
        """Send nothing more of the reply in progress (barge-in, cancel)."""
        if self.active is not None:
            self._stopped.add(self.active)

    def passes(self, event: ev.EngineEvent) -> bool:
        """Whether ``event`` may go out; keeps track of the reply in progress."""
        match event:
            case ev.ReplyStarted(response_id=rid):
                self.active = rid
            case ev.ReplyText(response_id=rid) | ev.ReplyAudio(response_id=rid):
                return rid not in self._stopped
            case ev.ReplyDone(response_id=rid):
                self._stopped.discard(rid)
                if self.active == rid:
                    self.active = None
        return True


class VoiceStreamSession:
    """One voice conversation over one bidirectional gRPC stream (a ``GrpcSession``).

    Subclasses name their config field (``config_field``), map the other request fields to
    handlers (``_handlers``), validate the config (``_settings``) and render engine events
    and errors as their response messages (``_render``, ``_error_message``).

    Args:
        config: The application config (session defaults, limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        emit: Sends one response message to the client (``GrpcStream.emit``).
        vad_batcher: Judges ``vad``'s audio together with other sessions'; ``None`` runs it in place.
        withdraw: Drops queued response messages not yet sent (``GrpcStream.withdraw``): a
            stopped reply's audio waiting for a slow reader goes too. ``None``: nothing is dropped.
    """

    protocol: ClassVar[str]
    audio_field: ClassVar[str]  # the response oneof field that carries reply audio
    config_field: ClassVar[str] = "config"
    first_message_hint: ClassVar[str] = "a config message"

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        vad_batcher: VADBatcher | None = None,
        withdraw: Withdraw | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())  # the server's: a client's session_id may collide with another's
        self.engine: VoiceSession | None = None
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self._withdraw = withdraw
        self._recorder = SessionRecorder(self.id, self.protocol)
        self._invalid = InvalidEventBudget(config.limits.max_invalid_events)
        self._replies = ReplyGate()
        self._input = InputAudio()
        self._finishing = False
        self._handlers: dict[str, Handler] = {}

    # -- GrpcSession -------------------------------------------------------------------------

    @property
    def responding(self) -> bool:
        """Whether a reply is being generated or sent, or the conversation is finishing."""
        return self._finishing or (self.engine is not None and self.engine.responding)

    async def handle_request(self, request: Message) -> None:
        """Act on one client message.

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT`` for anything before the config or a bad config,
                ``RESOURCE_EXHAUSTED`` for a message over ``limits.max_message_bytes``.
            CloseConnection: Too many invalid messages within a minute.
        """
        limit = self._config.limits.max_message_bytes
        size = request.ByteSize()
        if size > limit:
            raise GrpcAbort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"A message of {size} bytes exceeds the maximum of {limit} bytes; "
                "send audio in smaller chunks (100 ms is typical).",
            )
        kind = request.WhichOneof("content")
        engine = self.engine
        if kind == self.config_field:
            if engine is not None:
                await self._client_error(
                    "config_already_sent", "The config was already received; send it once."
                )
                return
            await self._start(getattr(request, kind))
            return
        if engine is None:
            what = f"{kind} " if kind else "an empty message "
            raise invalid_argument(
                f"Send {self.first_message_hint} first: {what}came before it. "
                f"The stream must begin with '{self.config_field}'."
            )
        if kind is None:
            await self._client_error("empty_message", "A message with no content was ignored.")
            return
        await self._handlers[kind](getattr(request, kind))

    async def finish(self) -> None:
        """The client half-closed: end the utterance in progress, send its reply, then return.

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT`` when the stream ended before any config.
        """
        if self.engine is None:
            raise invalid_argument(
                f"The stream ended before {self.first_message_hint}; send '{self.config_field}' first."
            )
        self._finishing = True
        try:
            await self.engine.end_of_input()
            await self.engine.wait_idle()
        finally:
            self._finishing = False

    async def close(self) -> None:
        """Cancel everything in flight; the stream is ending."""
        if self.engine is not None:
            await self.engine.close()

    # -- for the subclasses ------------------------------------------------------------------

    async def _start(self, config: Any) -> None:
        """Validate the config message, start the engine and greet the client."""
        settings, encoding = self._settings(config)
        self._input = InputAudio(encoding)
        self.engine = VoiceSession(
            self._config,
            self._models,
            self._vad,
            settings,
            self._on_engine_event,
            self._recorder.observe,
            self._vad_batcher,
        )
        await self._started(settings)

    def _settings(self, config: Any) -> tuple[VoiceSettings, Any]:
        """The engine settings and input encoding a config asks for.

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT``, naming the field at fault.
        """
        raise NotImplementedError

    async def _started(self, settings: VoiceSettings) -> None:
        """Tell the client the session is ready."""
        raise NotImplementedError

    def _render(self, event: ev.EngineEvent) -> list[Message]:
        """The response messages that say what ``event`` says (maybe none)."""
        raise NotImplementedError

    def _error_message(self, code: str, message: str) -> Message:
        """The protocol's error message (the stream goes on)."""
        raise NotImplementedError

    async def _turn_taken(self) -> None:
        """The client ended a turn (text, commit) and its answer starts now: say so, if the protocol does."""

    def _default_settings(self, input_rate: int, output_rate: int) -> VoiceSettings:
        return VoiceSettings.from_defaults(self.id, self._config.session, input_rate, output_rate)

    def _check_text(self, text: str, field: str) -> None:
        """Refuse text over ``limits.max_text_chars`` in a config (the call cannot start).

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT``.
        """
        limit = self._config.limits.max_text_chars
        if len(text) > limit:
            raise invalid_argument(f"{field} has {len(text)} characters; at most {limit} are accepted.")

    async def _error(self, code: str, message: str) -> None:
        """Send the protocol's error message and count it."""
        record_error(self.id, self.protocol, "invalid_request_error", code, message)
        await self._emit(self._error_message(code, message))

    async def _client_error(self, code: str, message: str) -> None:
        """A mistake of the client's that the stream survives (counted against its budget)."""
        await self._error(code, message)
        self._invalid.spend()

    async def _audio(self, data: bytes) -> None:
        """Feed one chunk of the client's audio to the engine."""
        assert self.engine is not None
        pcm16 = self._input.decode(data)
        if not pcm16:
            return
        try:
            await self.engine.append_audio(pcm16)
        except RequestRefused as refused:
            await self._client_error(refused.code, refused.message)

    async def _text_turn(self, text: str) -> None:
        """A typed turn: it supersedes the reply in progress and is answered like speech.

        Empty or overlong text is refused with an error message instead.
        """
        assert self.engine is not None
        limit = self._config.limits.max_text_chars
        if not text.strip():
            await self._client_error("empty_text", "A text turn must not be empty.")
            return
        if len(text) > limit:
            await self._client_error(
                "text_too_long", f"A text turn has {len(text)} characters; at most {limit} are accepted."
            )
            return
        await self._stop_reply("client_cancelled")
        self.engine.add_item(Item(id=new_id("item"), role="user", text=text))
        await self._reply_now()

    async def _reply_now(self) -> None:
        """Answer the conversation so far (after ``_turn_taken``)."""
        assert self.engine is not None
        await self._turn_taken()
        try:
            await self.engine.create_response()
        except RequestRefused as refused:  # a reply began in between (the person spoke)
            await self._client_error(refused.code, refused.message)

    async def _stop_reply(self, reason: ev.CancelReason) -> bool:
        """Stop the reply in progress now, sending nothing more of it; whether there was one."""
        assert self.engine is not None
        if not self.engine.responding:
            return False
        self._silence_reply()
        try:
            await self.engine.cancel_response(reason)
        except RequestRefused:  # it ended on its own meanwhile
            return False
        return True

    def _silence_reply(self) -> None:
        """Send nothing more of the reply in progress, not even audio already queued."""
        self._replies.stop_active()
        if self._withdraw is not None:
            # Queued audio belongs to the stopped reply: a new one cannot start before this returns.
            self._withdraw(lambda message: message.WhichOneof("content") == self.audio_field)

    def _person_speaking(self) -> bool:
        """Whether the VAD has heard speech that has not ended yet."""
        assert self.engine is not None
        return any(turn.phase is TurnPhase.USER_SPEAKING for turn in self.engine.turns)

    # -- engine events -----------------------------------------------------------------------

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        engine = self.engine
        speaking_over = engine is not None and engine.responding and engine.settings.interrupt_response
        if isinstance(event, ev.SpeechStarted) and speaking_over:
            self._silence_reply()  # barge-in: the engine cancels the reply right after this event
        if not self._replies.passes(event):
            return
        if isinstance(event, ev.ErrorOccurred):
            record_error(self.id, self.protocol, event.type, event.code, event.message)
        for message in self._render(event):
            await self._emit(message)
