"""The Speechmatics Flow adapter: Flow messages → engine calls; engine events → Flow messages.

One :class:`FlowSession` per WebSocket at ``/v1/flow``. The conversation starts with the
client's ``StartConversation`` (audio format and a template: voxray's named assistants,
``flow.templates`` in the config), then binary audio frames, each answered by exactly one
``AudioAdded``. The engine does the turn-taking; this renders its events: transcripts as
``AddPartialTranscript``/``AddTranscript``, each spoken phrase as ``ResponseStarted`` → audio
→ ``ResponseCompleted`` (``ResponseInterrupted`` on barge-in). ``AudioEnded`` finishes the
turn in progress, waits for its reply, then ends with ``ConversationEnding`` and
``ConversationEnded``, which every ending sends last.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.conversation import Item, new_id
from serve_app.engine.errors import RequestRefused
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.session import VoiceSession
from serve_app.engine.settings import VoiceSettings
from serve_app.observability.recorder import SessionRecorder
from serve_app.protocols.flow import messages as fm
from serve_app.protocols.flow.audio import OUTPUT_RATE, decode_audio
from serve_app.protocols.flow.speech import SpokenPhrases
from serve_app.protocols.speechmatics_session import SpeechmaticsSession, close_error_type
from serve_app.server.limits import CloseConnection

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]
EndSoon = Callable[[float], None]
PROTOCOL = "flow"


def flow_refusal(close: CloseConnection) -> list[dict[str, Any]]:
    """The ``Error`` (then ``ConversationEnded``) that explains a close to a Flow client."""
    error_type = close_error_type(close.error_code, "internal_error")
    return [fm.error(error_type, f"{close.message} ({close.error_code})"), fm.conversation_ended()]


class FlowSession(SpeechmaticsSession):
    """One Speechmatics Flow conversation over one WebSocket.

    Args:
        config: The application config (templates, session defaults, limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        emit: Sends one JSON message to the client.
        send_bytes: Sends one binary message (reply audio).
        end_soon: Closes the connection normally after the given seconds, unless the
            client closes first.
        vad_batcher: Judges ``vad``'s audio together with other sessions'; ``None`` runs it in place.
    """

    protocol = PROTOCOL

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        send_bytes: SendBytes,
        end_soon: EndSoon,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.engine: VoiceSession | None = None
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self._end_soon = end_soon
        self._recorder = SessionRecorder(self.id, PROTOCOL)
        self._started_at = time.monotonic()
        self._speech = SpokenPhrases(send_bytes, emit, self._seconds)
        self._encoding: fm.Encoding = "pcm_s16le"
        self._seq_no = 0
        self._finishing: asyncio.Task[None] | None = None
        self._ended = False
        self.tools: list[fm.Tool] = []

    def _seconds(self) -> float:
        """Seconds since the conversation started: the time base of response times."""
        return time.monotonic() - self._started_at

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        """Nothing to say yet: a Flow client speaks first (``StartConversation``).

        ``preset`` (an OpenAI client secret's session settings) does not apply to Flow.
        """

    @property
    def responding(self) -> bool:
        """Whether a reply is being generated, or the conversation is finishing."""
        finishing = self._finishing is not None and not self._finishing.done()
        return finishing or (self.engine is not None and self.engine.responding)

    refusal = staticmethod(flow_refusal)  # Error, then ConversationEnded

    async def _fail(self, error_type: fm.ErrorType, reason: str) -> None:
        """End the conversation with an ``Error``: Flow clients raise on it."""
        if self._ended:
            return
        await self._send(fm.error(error_type, reason))
        await self._end_conversation()

    async def _end_conversation(self) -> None:
        self._ended = True
        await self._emit(fm.conversation_ended())
        # The client acknowledges the last audio frames, then closes itself: let it.
        self._end_soon(self._config.flow.ending_grace_s)

    # -- client messages ---------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """Act on one client message: a bad one ends the conversation with an ``Error``."""
        if self._ended:
            return  # after ConversationEnded only the client's last acknowledgements come
        try:
            if isinstance(raw, bytes):
                await self._on_audio(raw)
            else:
                await self._on_message(fm.parse_client_message(raw, self._config.limits.max_message_bytes))
        except fm.FlowProtocolError as exc:
            await self._fail(exc.type, exc.reason)
        except Exception as exc:  # a bug ends this conversation cleanly, never another one
            logger.exception("flow session %s: unexpected error handling a client message", self.id)
            await self._fail("internal_error", f"Internal error: {exc}")

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, fm.StartConversation):
            await self._on_start(message)
            return
        if self.engine is None:
            raise fm.FlowProtocolError(f"Send StartConversation before {message.message}.")
        if isinstance(message, fm.AudioEnded):
            self._on_audio_ended(message)
        elif isinstance(message, fm.AddInput):
            await self._on_add_input(self.engine, message)
        elif isinstance(message, fm.ToolResult):
            reason = f"ToolResult {message.id!r} answers no ToolInvoke: voxray does not invoke tools yet."
            await self._send(fm.warning("protocol_error", reason))
        # AudioReceived: the client heard a frame; pacing is voxray's own (max_audio_lead_ms).

    async def _on_start(self, start: fm.StartConversation) -> None:
        if self.engine is not None:
            raise fm.FlowProtocolError("StartConversation was already received; send it once.")
        template = self._config.flow.templates.get(start.conversation_config.template_id)
        if template is None:
            known = ", ".join(sorted(self._config.flow.templates))
            reason = (
                f"Unknown template_id {start.conversation_config.template_id!r}; this server has: {known}."
            )
            raise fm.FlowProtocolError(reason, "config_error")
        defaults = self._config.session
        settings = VoiceSettings.from_defaults(self.id, defaults, start.audio_format.sample_rate, OUTPUT_RATE)
        variables = start.conversation_config.template_variables
        settings.instructions = template.fill(template.instructions or defaults.instructions, variables)
        settings.voice = template.voice or defaults.voice
        self._encoding = start.audio_format.encoding
        self.engine = VoiceSession(
            self._config,
            self._models,
            self._vad,
            settings,
            self._on_engine_event,
            self._recorder.observe,
            self._vad_batcher,
        )
        await self._emit(fm.conversation_started(self.id))
        await self._emit(fm.duration_limit_info(self._config.limits.max_session_s))
        if start.tools:
            self.tools = list(start.tools)
            names = ", ".join(tool.function.name for tool in start.tools)
            reason = (
                f"Tools accepted ({names}) but voxray does not invoke tools yet; replies will not call them."
            )
            await self._send(fm.warning("protocol_error", reason))
        if template.greeting:
            await self.engine.say(template.fill(template.greeting, variables))

    async def _on_audio(self, data: bytes) -> None:
        if self.engine is None:
            raise fm.FlowProtocolError("Send StartConversation before audio.")
        limit = self._config.limits.max_message_bytes
        if len(data) > limit:
            raise fm.FlowProtocolError(
                f"An audio frame of {len(data)} bytes exceeds the maximum of {limit} bytes."
            )
        pcm16 = decode_audio(data, self._encoding)
        self._seq_no += 1
        await self._emit(fm.audio_added(self._seq_no))
        try:
            await self.engine.append_audio(pcm16)
        except RequestRefused as refused:
            await self._send(fm.warning("protocol_error", refused.message))

    def _on_audio_ended(self, message: fm.AudioEnded) -> None:
        if self._finishing is None:
            self._finishing = asyncio.create_task(self._finish(message.last_seq_no))

    async def _finish(self, last_seq_no: int) -> None:
        """The client is done: answer what it said last, then end the conversation."""
        assert self.engine is not None
        if last_seq_no != self._seq_no:
            reason = f"AudioEnded says {last_seq_no} frames were sent; {self._seq_no} arrived."
            await self._send(fm.warning("protocol_error", reason))
        await self.engine.end_of_input()
        await self.engine.wait_idle()
        await self._emit(fm.conversation_ending())
        await self._end_conversation()

    async def _on_add_input(self, engine: VoiceSession, message: fm.AddInput) -> None:
        """Text the assistant must take into account: now (``immediate``) or in its next reply."""
        if message.interrupt_response and engine.responding:
            await engine.cancel_response("client_cancelled")
        engine.add_item(Item(id=new_id("item"), role="user", text=message.input))
        if message.immediate and not engine.responding:
            await engine.create_response()

    # -- engine events -----------------------------------------------------------------------

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        match event:
            case ev.TranscriptPartial(text=text, audio_start_ms=start, audio_end_ms=end):
                await self._emit(fm.add_transcript(text, start / 1000, end / 1000, partial=True))
            case ev.TranscriptFinal(text=text, audio_start_ms=start, audio_end_ms=end) if text.strip():
                await self._emit(fm.add_transcript(text.strip(), start / 1000, end / 1000, partial=False))
            case ev.ErrorOccurred(code="transcription_failed", message=message):
                await self._fail("asr_error", message)
            case ev.ErrorOccurred(message=message):
                await self._send(fm.warning("llm_error", message))
            case ev.ReplyText(text=text):
                await self._speech.phrase(text)
            case ev.ReplyAudio(pcm16=pcm16):
                await self._speech.audio(pcm16)
            case ev.ReplyDone(status=status):
                await self._speech.reply_done(interrupted=status != "completed")
