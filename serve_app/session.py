"""One conversation over one WebSocket: client events in, server events out.

Turn state lives here: the input audio buffer, server VAD, the conversation, the pending
transcriptions and the one active response. Everything the session says goes through
``emit``; the Ingress serialises it onto the socket. Bad client input becomes an ``error``
event and the session carries on, as the OpenAI Realtime API does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from deployments.types import SamplingParams, Transcript
from serve_app.audio import resample_pcm16
from serve_app.config import AppConfig
from serve_app.conversation import Conversation, Item, new_id
from serve_app.model_clients import ModelClients
from serve_app.protocol import realtime as rt
from serve_app.response import ResponsePlan, ResponseRun
from serve_app.vad import SpeechStarted, SpeechStopped, VADStream

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
ASR_RATE = 16_000
MIN_COMMIT_MS = 100  # the OpenAI API refuses to commit less than 100 ms of audio


class Session:
    """State and turn-taking for one client connection.

    Args:
        config: The application config (session defaults and limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        emit: Sends one server event to the client.
    """

    def __init__(self, config: AppConfig, models: ModelClients, vad: VADStream, emit: Emit) -> None:
        self.id = new_id("sess")
        self.state = rt.SessionState.from_defaults(self.id, config.session)
        self._config = config
        self._models = models
        self._vad = vad
        self._emit = emit
        self.conversation = Conversation(config.session.max_history_messages)
        self._buffer = bytearray()  # input audio not yet committed, at the input rate
        self._buffer_start_ms = 0.0  # stream time of the buffer's first sample
        self._stream_ms = 0.0  # stream time of the end of all audio received
        self._speech_item_id: str | None = None
        self._speech_start_ms: float | None = None
        self._transcriptions: dict[str, asyncio.Task[Transcript | None]] = {}
        self._response: ResponseRun | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._closed = False
        self._apply_vad_settings()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Greet the client with ``session.created``."""
        await self._emit(rt.session_created(self.state))

    async def close(self) -> None:
        """Cancel everything in flight; the connection is gone."""
        self._closed = True
        tasks = [t for t in [self._response_task, *self._transcriptions.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def responding(self) -> bool:
        """Whether a response is being generated or waited for."""
        return self._response_task is not None and not self._response_task.done()

    # -- client events -----------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """Parse and act on one client message; protocol errors become ``error`` events."""
        try:
            event = rt.parse_client_event(raw, max_bytes=self._config.limits.max_message_bytes)
            await self._dispatch(event)
        except rt.ProtocolError as exc:
            await self._emit(exc.to_event())
        except Exception as exc:  # a bug must cost one error event, never the connection
            logger.exception("session %s: unexpected error handling a client event", self.id)
            await self._emit(rt.error_event("server_error", "internal_error", f"Internal error: {exc}"))

    async def _dispatch(self, event: Any) -> None:
        handler = getattr(self, "_on_" + event.type.replace(".", "_"), None)
        if handler is None:
            raise rt.ProtocolError(
                "unsupported_event_type",
                f"voxray does not support '{event.type}' yet.",
                event_id=event.event_id,
            )
        await handler(event)

    async def _on_session_update(self, event: Any) -> None:
        self.state.apply_update(event.session, event_id=event.event_id)
        self._apply_vad_settings()
        await self._emit(rt.session_updated(self.state))

    async def _on_input_audio_buffer_append(self, event: Any) -> None:
        audio: bytes = event.audio
        rate = self.state.input_rate
        max_bytes = int(self._config.limits.max_input_buffer_s * rate) * 2
        if len(self._buffer) + len(audio) > max_bytes:
            raise rt.ProtocolError(
                "input_audio_buffer_full",
                f"The input audio buffer holds at most {self._config.limits.max_input_buffer_s:g} s; "
                "commit or clear it. This chunk was dropped.",
                event_id=event.event_id,
            )
        self._buffer += audio
        self._stream_ms += len(audio) / 2 / rate * 1000
        if self.state.turn_detection is None:
            return
        for vad_event in self._vad.feed(audio, rate):
            if isinstance(vad_event, SpeechStarted):
                await self._on_speech_started(vad_event.audio_start_ms)
            elif isinstance(vad_event, SpeechStopped):
                await self._on_speech_stopped(vad_event.audio_end_ms)
        if self._speech_start_ms is None:
            self._trim_idle_buffer()

    async def _on_input_audio_buffer_commit(self, event: Any) -> None:
        if self._buffer_ms() < MIN_COMMIT_MS:
            raise rt.ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {self._buffer_ms():.2f}ms of audio.",
                event_id=event.event_id,
            )
        item_id = self._speech_item_id or new_id("item")
        await self._commit(item_id, bytes(self._buffer), create_response=False)
        self._reset_input()

    async def _on_input_audio_buffer_clear(self, event: Any) -> None:
        self._reset_input()
        await self._emit(rt.input_audio_buffer_cleared())

    async def _on_conversation_item_create(self, event: Any) -> None:
        item = Item(id=event.item.id or new_id("item"), role=event.item.role, text=event.item.text)
        try:
            previous = self.conversation.add(item, event.previous_item_id)
        except KeyError as exc:
            raise rt.ProtocolError(
                "item_not_found",
                f"Previous item '{event.previous_item_id}' does not exist.",
                event_id=event.event_id,
                param="previous_item_id",
            ) from exc
        await self._emit(rt.conversation_item_added(item, previous_item_id=previous))
        await self._emit(rt.conversation_item_done(item, previous_item_id=previous))

    async def _on_response_create(self, event: Any) -> None:
        if self.responding:
            raise rt.ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress. Wait until the response "
                "is finished before creating a new one.",
                event_id=event.event_id,
            )
        self._start_response(time.perf_counter(), {}, overrides=event.response)

    async def _on_response_cancel(self, event: Any) -> None:
        if not self.responding:
            raise rt.ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                event_id=event.event_id,
            )
        await self._cancel_response("client_cancelled")

    async def _on_conversation_item_delete(self, event: Any) -> None:
        try:
            self.conversation.delete(event.item_id)
        except KeyError as exc:
            raise rt.ProtocolError(
                "item_not_found", f"Item '{event.item_id}' does not exist.", event_id=event.event_id
            ) from exc
        await self._emit(rt.conversation_item_deleted(event.item_id))

    async def _on_conversation_item_truncate(self, event: Any) -> None:
        try:
            item = self.conversation.get(event.item_id)
        except KeyError as exc:
            raise rt.ProtocolError(
                "item_not_found", f"Item '{event.item_id}' does not exist.", event_id=event.event_id
            ) from exc
        if item.role != "assistant":
            raise rt.ProtocolError(
                "invalid_value", "Only assistant audio items can be truncated.", event_id=event.event_id
            )
        # Keep the phrases whose audio had started playing by ``audio_end_ms``.
        kept, start_ms = [], 0
        for phrase, end_ms in item.phrase_audio_ms:
            if start_ms >= event.audio_end_ms:
                break
            kept.append(phrase)
            start_ms = end_ms
        item.text = "".join(kept).strip()
        await self._emit(rt.conversation_item_truncated(item.id, event.content_index, event.audio_end_ms))

    # -- turns -------------------------------------------------------------------------------

    async def _on_speech_started(self, audio_start_ms: float) -> None:
        self._speech_item_id = new_id("item")
        self._speech_start_ms = max(audio_start_ms, self._buffer_start_ms)
        await self._emit(rt.speech_started(int(audio_start_ms), self._speech_item_id))
        if self.responding and self.state.interrupt_response:
            await self._cancel_response("turn_detected")

    async def _on_speech_stopped(self, audio_end_ms: float) -> None:
        stopped_at = time.perf_counter()
        item_id = self._speech_item_id or new_id("item")
        start_ms = self._speech_start_ms if self._speech_start_ms is not None else self._buffer_start_ms
        await self._emit(rt.speech_stopped(int(audio_end_ms), item_id))
        audio = self._slice_buffer(start_ms, audio_end_ms)
        self._drop_buffer_until(audio_end_ms)
        self._speech_item_id = None
        self._speech_start_ms = None
        await self._commit(item_id, audio, create_response=self.state.create_response, stopped_at=stopped_at)

    async def _commit(
        self, item_id: str, audio: bytes, create_response: bool, stopped_at: float | None = None
    ) -> None:
        """Turn committed audio into a user item, transcribe it, and maybe answer it."""
        audio_ms = int(len(audio) / 2 / self.state.input_rate * 1000)
        item = Item(id=item_id, role="user", modality="audio", status="in_progress", audio_ms=audio_ms)
        previous = self.conversation.add(item)
        await self._emit(rt.input_audio_buffer_committed(item_id, previous))
        await self._emit(rt.conversation_item_added(item, previous_item_id=previous))
        started = stopped_at or time.perf_counter()
        task = asyncio.create_task(self._transcribe(item, audio))
        self._transcriptions[item_id] = task
        task.add_done_callback(lambda _: self._transcriptions.pop(item_id, None))
        if create_response and not self.responding:
            self._start_response(started, {}, wait_for=task)

    async def _transcribe(self, item: Item, audio: bytes) -> Transcript | None:
        started = time.perf_counter()
        pcm16k = resample_pcm16(audio, self.state.input_rate, ASR_RATE)
        try:
            language = self.state.language or self._config.asr.language  # None: detect it
            transcript = await self._models.asr.transcribe(pcm16k, ASR_RATE, language)
        except Exception as exc:
            logger.exception("transcription of %s failed", item.id)
            item.status = "incomplete"
            await self._emit(rt.transcription_failed(item.id, f"{type(exc).__name__}: {exc}"))
            await self._emit(rt.error_event("server_error", "transcription_failed", f"ASR failed: {exc}"))
            return None
        item.text = transcript.text
        item.status = "completed"
        transcript.processing_s = time.perf_counter() - started
        await self._emit(rt.transcription_completed(item.id, transcript.text, item.audio_ms / 1000))
        await self._emit(rt.conversation_item_done(item))
        return transcript

    def _start_response(
        self,
        started_at: float,
        timings: dict[str, float],
        wait_for: asyncio.Task[Transcript | None] | None = None,
        overrides: Any = None,
    ) -> None:
        self._response_task = asyncio.create_task(self._respond(started_at, timings, wait_for, overrides))

    async def _respond(
        self,
        started_at: float,
        timings: dict[str, float],
        wait_for: asyncio.Task[Transcript | None] | None,
        overrides: Any,
    ) -> None:
        """Wait for the user's transcript(s), then run one response to completion or cancel.

        ``overrides`` is the optional ``response`` of ``response.create``: instructions,
        output modalities, max output tokens and voice for this response only.
        """
        if wait_for is not None:
            transcript = await asyncio.shield(wait_for)
            if transcript is None or not transcript.text.strip():
                return  # nothing intelligible was said: no reply
            timings["asr_ms"] = round(transcript.processing_s * 1000, 1)
        pending = [t for t in self._transcriptions.values() if t is not wait_for]
        if pending:  # answer only once every committed utterance has its transcript
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)
        instructions = _override(overrides, "instructions") or self.state.instructions
        plan = ResponsePlan(
            messages=self.conversation.messages(instructions),
            params=SamplingParams(
                max_tokens=self._max_tokens(_override(overrides, "max_output_tokens")),
                temperature=self._config.llm.temperature,
            ),
            voice=_override(overrides, "voice") or self.state.voice,
            output_rate=self.state.output_rate,
            audio="audio" in (_override(overrides, "output_modalities") or self.state.output_modalities),
            max_audio_lead_s=self._config.session.max_audio_lead_ms / 1000,
            timings=timings,
            started_at=started_at,
        )
        item = Item(id=new_id("item"), role="assistant", modality="audio" if plan.audio else "text")
        item.status = "in_progress"
        self.conversation.add(item)
        self._response = ResponseRun(self._models, plan, item, self._emit)
        await self._response.run()

    def _max_tokens(self, override: int | str | None) -> int:
        """Reply length cap: the response's, else the session's, else the config's ("inf" too)."""
        for limit in (override, self.state.max_output_tokens):
            if isinstance(limit, int):
                return limit
        return self._config.llm.max_tokens

    async def _cancel_response(self, reason: str) -> None:
        """Stop the active response now and wait until its final events are out."""
        task = self._response_task
        if task is None or task.done():
            return
        if self._response is not None and self._response.item.status == "in_progress":
            self._response.cancel(reason)
        else:  # still waiting for the transcript: nothing was said yet
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # -- input buffer ------------------------------------------------------------------------

    def _apply_vad_settings(self) -> None:
        turn = self.state.turn_detection
        if turn is not None:
            self._vad.configure(
                threshold=turn.threshold,
                prefix_padding_ms=turn.prefix_padding_ms,
                silence_duration_ms=turn.silence_duration_ms,
            )

    def _buffer_ms(self) -> float:
        return len(self._buffer) / 2 / self.state.input_rate * 1000

    def _offset(self, stream_ms: float) -> int:
        """Byte offset in the buffer of stream time ``stream_ms`` (clamped, sample aligned)."""
        samples = int((stream_ms - self._buffer_start_ms) * self.state.input_rate / 1000)
        return max(0, min(len(self._buffer), samples * 2))

    def _slice_buffer(self, start_ms: float, end_ms: float) -> bytes:
        return bytes(self._buffer[self._offset(start_ms) : self._offset(end_ms)])

    def _drop_buffer_until(self, stream_ms: float) -> None:
        cut = self._offset(stream_ms)
        del self._buffer[:cut]
        self._buffer_start_ms += cut / 2 / self.state.input_rate * 1000

    def _trim_idle_buffer(self) -> None:
        """Outside speech keep only what a future speech start's prefix padding may need."""
        turn = self.state.turn_detection
        keep_ms = (turn.prefix_padding_ms if turn else 0) + 1000
        if self._buffer_ms() > 2 * keep_ms:
            self._drop_buffer_until(self._stream_ms - keep_ms)

    def _reset_input(self) -> None:
        self._buffer.clear()
        self._buffer_start_ms = self._stream_ms = 0.0
        self._speech_item_id = None
        self._speech_start_ms = None
        self._vad.reset()


def _override(params: Any, field: str) -> Any:
    """A field of ``response.create``'s optional ``response`` object (voice is nested)."""
    if params is None:
        return None
    if field == "voice":
        output = params.audio.output if params.audio else None
        return output.voice if output else None
    return getattr(params, field)
