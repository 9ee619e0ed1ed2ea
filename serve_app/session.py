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

from deployments.types import ChatMessage, Transcript
from serve_app import metrics
from serve_app.config import AppConfig
from serve_app.conversation import Conversation, Item, new_id
from serve_app.input_buffer import InputBuffer
from serve_app.limits import InvalidEventBudget
from serve_app.model_clients import ModelClients
from serve_app.protocol import realtime as rt
from serve_app.response import ResponseRun, assistant_item, plan_response
from serve_app.session_items import ItemEvents, check_text_length, session_preset
from serve_app.speculation import EventGate, Speculation
from serve_app.transcription import Transcriber
from serve_app.vad import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, VADEvent, VADStream
from serve_app.vad_batch import VADBatcher

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
MIN_COMMIT_MS = 100  # the OpenAI API refuses to commit less than 100 ms of audio


class Session:
    """State and turn-taking for one client connection.

    Args:
        config: The application config (session defaults and limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        emit: Sends one server event to the client.
        vad_batcher: Judges ``vad``'s audio together with other sessions' (the Ingress
            shares one); ``None`` runs the VAD in place.
    """

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.id = new_id("sess")
        self.state = rt.SessionState.from_defaults(self.id, config.session)
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self.conversation = Conversation(
            config.session.max_history_messages, config.limits.max_conversation_items
        )
        self._items = ItemEvents(self.conversation, emit, config.limits)
        self._transcriber = Transcriber(
            models, self.state, config.asr.language, emit, metrics.StageLabels.of("ASR", config.asr)
        )
        self._input = InputBuffer(self.state.input_rate)  # audio not yet committed
        self._speech_item_id: str | None = None
        self._speech_start_ms: float | None = None
        self._transcriptions: dict[str, asyncio.Task[Transcript | None]] = {}
        self._response: ResponseRun | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._speculation: Speculation | None = None
        self._invalid_events = InvalidEventBudget(config.limits.max_invalid_events)
        self._apply_vad_settings()

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
                self._apply_vad_settings()
            except rt.ProtocolError as exc:
                await self._emit(exc.to_event())
        await self._emit(rt.session_created(self.state))

    async def close(self) -> None:
        """Cancel everything in flight; the connection is gone."""
        await self._drop_speculation()
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
        """Parse and act on one client message; protocol errors become ``error`` events.

        Raises:
            CloseConnection: The client sent more invalid events than ``limits.max_invalid_events``
                within a minute; the connection must end.
        """
        try:
            event = rt.parse_client_event(raw, max_bytes=self._config.limits.max_message_bytes)
            await self._dispatch(event)
        except rt.ProtocolError as exc:
            await self._emit(exc.to_event())
            self._invalid_events.spend()
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
        limits = self._config.limits
        check_text_length(event.session.instructions, "session.instructions", limits, event.event_id)
        self.state.apply_update(event.session, event_id=event.event_id)
        self._apply_vad_settings()
        await self._emit(rt.session_updated(self.state))

    async def _on_input_audio_buffer_append(self, event: Any) -> None:
        audio: bytes = event.audio
        rate = self.state.input_rate
        max_bytes = int(self._config.limits.max_input_buffer_s * rate) * 2
        if len(self._input) + len(audio) > max_bytes:
            raise rt.ProtocolError(
                "input_audio_buffer_full",
                f"The input audio buffer holds at most {self._config.limits.max_input_buffer_s:g} s; "
                "commit or clear it. This chunk was dropped.",
                event_id=event.event_id,
            )
        self._input.append(audio)
        turn = self.state.turn_detection
        if turn is None:
            return
        if self._vad_batcher is not None:
            vad_events = await self._vad_batcher.feed(self._vad, audio, rate)
        else:
            vad_events = self._vad.feed(audio, rate)
        for vad_event in vad_events:
            await self._on_vad_event(vad_event)
        if self._speech_start_ms is None:  # keep what a next speech start's padding may need
            self._input.keep_last(turn.prefix_padding_ms + 1000)

    async def _on_input_audio_buffer_commit(self, event: Any) -> None:
        if self._input.duration_ms < MIN_COMMIT_MS:
            raise rt.ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {self._input.duration_ms:.2f}ms of audio.",
                event_id=event.event_id,
            )
        await self._drop_speculation()
        item_id = self._speech_item_id or new_id("item")
        await self._commit(item_id, self._input.all(), create_response=False)
        self._reset_input()

    async def _on_input_audio_buffer_clear(self, event: Any) -> None:
        await self._drop_speculation()
        self._reset_input()
        await self._emit(rt.input_audio_buffer_cleared())

    async def _on_conversation_item_create(self, event: Any) -> None:
        await self._items.create(event)

    async def _on_response_create(self, event: Any) -> None:
        if self.responding:
            raise rt.ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress. Wait until the response "
                "is finished before creating a new one.",
                event_id=event.event_id,
            )
        instructions = event.response.instructions if event.response is not None else None
        check_text_length(instructions, "response.instructions", self._config.limits, event.event_id)
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
        await self._items.delete(event)

    async def _on_conversation_item_truncate(self, event: Any) -> None:
        await self._items.truncate(event)

    # -- turns -------------------------------------------------------------------------------

    async def _on_vad_event(self, event: VADEvent) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_speech_started(event.audio_start_ms)
        elif isinstance(event, SpeechPaused):
            await self._speculate(event.speech_end_ms)
        elif isinstance(event, SpeechResumed):
            await self._drop_speculation()
        elif isinstance(event, SpeechStopped):
            await self._on_speech_stopped(event.audio_end_ms, event.speech_end_ms)

    async def _on_speech_started(self, audio_start_ms: float) -> None:
        self._speech_item_id = new_id("item")
        self._speech_start_ms = max(audio_start_ms, self._input.start_ms)
        await self._emit(rt.speech_started(int(audio_start_ms), self._speech_item_id))
        if self.responding and self.state.interrupt_response:
            detected_at = time.perf_counter()
            await self._cancel_response("turn_detected")
            metrics.record("voxray_barge_in_stop_latency_seconds", time.perf_counter() - detected_at)

    async def _on_speech_stopped(self, audio_end_ms: float, speech_end_ms: float) -> None:
        speech_end_at = self._wall_time(speech_end_ms)
        item_id = self._speech_item_id or new_id("item")
        start_ms = self._speech_start_ms if self._speech_start_ms is not None else self._input.start_ms
        await self._emit(rt.speech_stopped(int(audio_end_ms), item_id))
        audio = self._input.slice(start_ms, audio_end_ms)
        self._input.drop_until(audio_end_ms)
        self._speech_item_id = None
        self._speech_start_ms = None
        timings = {"endpointing_ms": _ms_since(speech_end_at)}
        metrics.record("voxray_endpointing_wait_seconds", timings["endpointing_ms"] / 1000)
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.item_id == item_id:
            await self._confirm_speculation(speculation, audio, timings)
        else:
            await self._commit(item_id, audio, self.state.create_response, speech_end_at, timings)

    async def _commit(
        self,
        item_id: str,
        audio: bytes,
        create_response: bool,
        speech_end_at: float | None = None,
        timings: dict[str, float] | None = None,
        asr: asyncio.Task[Transcript] | None = None,
    ) -> asyncio.Task[Transcript | None]:
        """Turn committed audio into a user item, publish its transcript, and maybe answer it."""
        item = Item(id=item_id, role="user", modality="audio", status="in_progress")
        item.audio_ms = int(len(audio) / 2 / self.state.input_rate * 1000)
        previous = self.conversation.add(item)
        await self._emit(rt.input_audio_buffer_committed(item_id, previous))
        await self._emit(rt.conversation_item_added(item, previous_item_id=previous))
        task = asyncio.create_task(self._transcriber.publish(item, asr or self._transcriber.start(audio)))
        self._transcriptions[item_id] = task
        task.add_done_callback(lambda _: self._transcriptions.pop(item_id, None))
        if create_response and not self.responding:
            self._start_response(speech_end_at or time.perf_counter(), timings or {}, wait_for=task)
        return task

    # -- speculation -------------------------------------------------------------------------

    async def _speculate(self, speech_end_ms: float) -> None:
        """On a pause, transcribe and start answering behind a closed gate (see speculation.py)."""
        await self._drop_speculation()
        if (
            not self._config.session.speculative_turns
            or not self.state.create_response
            or self.responding
            or self._transcriptions
            or self._speech_item_id is None
        ):
            return
        start_ms = self._speech_start_ms if self._speech_start_ms is not None else self._input.start_ms
        audio = self._input.slice(start_ms, self._input.end_ms)
        spec = Speculation(
            item_id=self._speech_item_id,
            speech_end_at=self._wall_time(speech_end_ms),
            asr=self._transcriber.start(audio),
            gate=EventGate(self._emit),
        )
        spec.task = asyncio.create_task(self._speculative_response(spec))
        self._speculation = spec

    async def _speculative_response(self, spec: Speculation) -> None:
        transcript = await asyncio.shield(spec.asr)
        if not transcript.text.strip():
            return
        spec.timings["asr_ms"] = round(transcript.processing_s * 1000, 1)
        spec.timings["asr_done_ms"] = _ms_since(spec.speech_end_at)
        plan = plan_response(
            self.state, self._config, self.conversation, None, spec.speech_end_at, spec.timings
        )
        plan.messages.append(ChatMessage(role="user", content=transcript.text))
        spec.run = ResponseRun(self._models, plan, assistant_item(plan), spec.gate.emit, speculative=True)
        if spec.confirmed:
            self._response = spec.run
        await spec.run.run()

    async def _confirm_speculation(self, spec: Speculation, audio: bytes, timings: dict[str, float]) -> None:
        """The turn ended as guessed: commit it, then release the response's held events."""
        spec.timings.update(timings)
        spec.confirmed = True
        self._response_task = spec.task
        published = await self._commit(spec.item_id, audio, create_response=False, asr=spec.asr)
        transcript = await asyncio.shield(published)
        if transcript is None:
            await spec.cancel()  # ASR failed: there is no reply to release
            return
        if spec.run is not None:
            self._response = spec.run
            self.conversation.add(spec.run.item)
        await spec.gate.open()
        if spec.run is not None:
            spec.run.released()

    async def _drop_speculation(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            await speculation.cancel()

    # -- responses ---------------------------------------------------------------------------

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
            timings["asr_done_ms"] = _ms_since(started_at)
        pending = [t for t in self._transcriptions.values() if t is not wait_for]
        if pending:  # answer only once every committed utterance has its transcript
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)
        plan = plan_response(self.state, self._config, self.conversation, overrides, started_at, timings)
        item = assistant_item(plan)
        self.conversation.add(item)
        self._response = ResponseRun(self._models, plan, item, self._emit)
        await self._response.run()

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

    # -- input -------------------------------------------------------------------------------

    def _apply_vad_settings(self) -> None:
        turn = self.state.turn_detection
        if turn is not None:
            self._vad.configure(
                threshold=turn.threshold,
                prefix_padding_ms=turn.prefix_padding_ms,
                silence_duration_ms=turn.silence_duration_ms,
                pause_ms=self._config.session.speculation_pause_ms,
            )

    def _wall_time(self, stream_ms: float) -> float:
        """``perf_counter`` time at which stream time ``stream_ms`` arrived (approximately)."""
        return time.perf_counter() - max(0.0, self._input.end_ms - stream_ms) / 1000

    def _reset_input(self) -> None:
        self._input.clear()
        self._speech_item_id = None
        self._speech_start_ms = None
        self._vad.reset()


def _ms_since(instant: float) -> float:
    return round((time.perf_counter() - instant) * 1000, 1)
