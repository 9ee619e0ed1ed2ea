"""One conversation, protocol-neutral: audio, text and control calls in, engine events out.

A :class:`VoiceSession` holds a conversation's state: its settings, the uncommitted input
audio, server VAD, the conversation history, and the turns in flight. VAD verdicts move
turns along (``turn.py``); everything the session has to say goes out as typed events
(``events.py``) to one sink, which a protocol adapter turns into wire messages. Requests it
cannot carry out raise :class:`~serve_app.engine.errors.RequestRefused` and change nothing.
"""

from __future__ import annotations

import asyncio
import time

from deployments.types import Transcript
from serve_app.config import AppConfig
from serve_app.engine.audio.vad import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    VADEvent,
    VADStream,
)
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.conversation import Conversation, Item, new_id
from serve_app.engine.errors import RequestRefused
from serve_app.engine.events import (
    EngineEvent,
    EventSink,
    InputCleared,
    StageMeasured,
)
from serve_app.engine.events import SpeechStarted as SpeechStartedEvent
from serve_app.engine.events import SpeechStopped as SpeechStoppedEvent
from serve_app.engine.input_buffer import InputBuffer
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.response import ReplyOverrides
from serve_app.engine.settings import SessionSettings
from serve_app.engine.transcription import Transcriber
from serve_app.engine.turn import Turn, TurnContext, Utterance
from serve_app.observability import metrics

MIN_COMMIT_MS = 100  # the OpenAI API refuses to commit less than 100 ms of audio


async def _ignore(event: EngineEvent) -> None:
    return None


class VoiceSession:
    """State and turn-taking for one conversation.

    Args:
        config: The application config (session defaults and limits).
        models: The ASR, LLM and TTS endpoints.
        vad: A fresh VAD stream for this session's input audio.
        settings: The session's settings, owned by the adapter (read on every use).
        sink: Receives every event for the client, in order.
        observe: Receives the measurements too (the metrics recorder); ``None`` drops them.
        vad_batcher: Judges ``vad``'s audio together with other sessions' (the Ingress
            shares one); ``None`` runs the VAD in place.
    """

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        settings: SessionSettings,
        sink: EventSink,
        observe: EventSink | None = None,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.id = settings.id
        self.settings = settings
        self.conversation = Conversation(
            config.session.max_history_messages, config.limits.max_conversation_items
        )
        self._config = config
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._sink = sink
        self._observe = observe or _ignore
        labels = metrics.StageLabels.of("ASR", config.asr)
        transcriber = Transcriber(models, settings, config.asr.language, self._publish, self._measure, labels)
        self._ctx = TurnContext(
            config, models, settings, self.conversation, transcriber, self._publish, self._measure
        )
        self._input = InputBuffer(settings.input_rate)  # audio not yet committed
        self._speaking: Turn | None = None  # the turn whose utterance is in progress
        self._speech_start_ms: float | None = None
        self._replying: Turn | None = None  # the turn whose reply is active
        self._turns: set[Turn] = set()
        self.settings_changed()

    # -- events out --------------------------------------------------------------------------

    async def _publish(self, event: EngineEvent) -> None:
        await self._observe(event)
        await self._sink(event)

    async def _measure(self, event: EngineEvent) -> None:
        await self._observe(event)

    # -- lifecycle ---------------------------------------------------------------------------

    def settings_changed(self) -> None:
        """The adapter changed the settings: apply the turn detection values to the VAD."""
        turn = self.settings.turn_detection
        if turn is not None:
            self._vad.configure(
                threshold=turn.threshold,
                prefix_padding_ms=turn.prefix_padding_ms,
                silence_duration_ms=turn.silence_duration_ms,
                pause_ms=self._config.session.speculation_pause_ms,
            )

    async def close(self) -> None:
        """Cancel everything in flight; the connection is gone."""
        await asyncio.gather(*(turn.close() for turn in list(self._turns)))

    @property
    def responding(self) -> bool:
        """Whether a reply is being generated or waited for."""
        return self._replying is not None and self._replying.replying

    @property
    def turns(self) -> list[Turn]:
        """The turns in flight (a snapshot, in no particular order)."""
        return list(self._turns)

    # -- audio in ----------------------------------------------------------------------------

    async def append_audio(self, pcm16: bytes) -> None:
        """Take input audio (PCM16 mono at ``settings.input_rate``) and run server VAD on it.

        Raises:
            RequestRefused: ``input_audio_buffer_full``; the chunk was dropped.
        """
        rate = self.settings.input_rate
        limit_s = self._config.limits.max_input_buffer_s
        if len(self._input) + len(pcm16) > int(limit_s * rate) * 2:
            raise RequestRefused(
                "input_audio_buffer_full",
                f"The input audio buffer holds at most {limit_s:g} s; commit or clear it. "
                "This chunk was dropped.",
            )
        self._input.append(pcm16)
        turn_detection = self.settings.turn_detection
        if turn_detection is None:
            return
        if self._vad_batcher is not None:
            vad_events = await self._vad_batcher.feed(self._vad, pcm16, rate)
        else:
            vad_events = self._vad.feed(pcm16, rate)
        for vad_event in vad_events:
            await self._on_vad_event(vad_event)
        if self._speech_start_ms is None:  # keep what a next speech start's padding may need
            self._input.keep_last(turn_detection.prefix_padding_ms + 1000)

    async def commit_input(self) -> None:
        """Make all uncommitted input audio a user item (no reply: the client asks for one).

        Raises:
            RequestRefused: ``input_audio_buffer_commit_empty`` under 100 ms of audio.
        """
        if self._input.duration_ms < MIN_COMMIT_MS:
            raise RequestRefused(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {self._input.duration_ms:.2f}ms of audio.",
            )
        turn = self._speaking or await self._open_turn()
        utterance = Utterance(self._input.all(), self._input.start_ms, self._input.end_ms)
        self._speaking = None
        await turn.end_of_speech(utterance, reply=False)
        self._reset_input()

    async def clear_input(self) -> None:
        """Drop the uncommitted input audio."""
        if self._speaking is not None:
            await self._speaking.abandon()
            self._speaking = None
        self._reset_input()
        await self._publish(InputCleared())

    # -- conversation and replies ------------------------------------------------------------

    async def create_response(
        self, overrides: ReplyOverrides | None = None, fixed_text: str | None = None
    ) -> None:
        """Reply now, to the conversation so far (after any transcript still on its way).

        ``fixed_text`` says exactly that instead of asking the LLM.

        Raises:
            RequestRefused: ``conversation_already_has_active_response``.
        """
        if self.responding:
            raise RequestRefused(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress. Wait until the response "
                "is finished before creating a new one.",
            )
        turn = await self._open_turn()
        self._replying = turn
        turn.reply_now(overrides, self._pending_transcripts(), fixed_text)

    async def say(self, text: str) -> None:
        """Speak ``text`` as the assistant's reply (a greeting), without asking the LLM.

        Raises:
            RequestRefused: ``conversation_already_has_active_response``.
        """
        await self.create_response(fixed_text=text)

    async def end_of_input(self) -> None:
        """The client sent its last audio: end the utterance in progress as the VAD would."""
        if self._speaking is not None:
            end_ms = self._input.end_ms
            await self._on_speech_stopped(end_ms, end_ms)

    async def wait_idle(self) -> None:
        """Wait until every reply and transcript in flight is done (not counting new speech)."""
        while busy := [t for t in self._turns if t is not self._speaking]:
            await asyncio.gather(*(t.finished() for t in busy))

    async def cancel_response(self, reason: str = "client_cancelled") -> None:
        """Stop the active reply now; returns once its last events are out.

        Raises:
            RequestRefused: ``response_cancel_not_active``.
        """
        if not self.responding or self._replying is None:
            raise RequestRefused(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        await self._replying.cancel(reason)

    def add_item(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Add a client-written item after ``previous_item_id`` (default: at the end).

        Returns:
            The id of the item it now follows.

        Raises:
            RequestRefused: ``item_already_exists`` or ``item_not_found``.
        """
        if self.conversation.has(item.id):
            raise RequestRefused(
                "item_already_exists", f"Item with id '{item.id[:100]}' already exists.", "item.id"
            )
        try:
            return self.conversation.add(item, previous_item_id)
        except KeyError:
            message = f"Previous item '{(previous_item_id or '')[:100]}' does not exist."
            raise RequestRefused("item_not_found", message, "previous_item_id") from None

    def delete_item(self, item_id: str) -> None:
        """Remove an item.

        Raises:
            RequestRefused: ``item_not_found``.
        """
        try:
            self.conversation.delete(item_id)
        except KeyError:
            raise _not_found(item_id) from None

    def truncate_item(self, item_id: str, audio_end_ms: int) -> Item:
        """Cut an assistant item to what the user heard (``audio_end_ms`` of its audio).

        Raises:
            RequestRefused: ``item_not_found``, or ``invalid_value`` for a user item.
        """
        try:
            return self.conversation.truncate_audio(item_id, audio_end_ms).snapshot()
        except KeyError:
            raise _not_found(item_id) from None
        except ValueError as exc:
            raise RequestRefused("invalid_value", str(exc), "item_id") from None

    # -- turns -------------------------------------------------------------------------------

    async def _open_turn(self, item_id: str | None = None) -> Turn:
        turn = await Turn.open(self._ctx, item_id or new_id("item"))
        self._turns.add(turn)
        turn_done = asyncio.ensure_future(turn.finished())
        turn_done.add_done_callback(lambda _: self._turns.discard(turn))
        return turn

    def _pending_transcripts(self) -> list[asyncio.Task[Transcript | None]]:
        return [t.transcript for t in self._turns if t.transcript is not None and not t.transcript.done()]

    async def _on_vad_event(self, event: VADEvent) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_speech_started(event.audio_start_ms)
        elif isinstance(event, SpeechPaused):
            await self._speculate(event.speech_end_ms)
        elif isinstance(event, SpeechResumed):
            if self._speaking is not None:
                await self._speaking.drop_speculation()
        elif isinstance(event, SpeechStopped):
            await self._on_speech_stopped(event.audio_end_ms, event.speech_end_ms)

    async def _on_speech_started(self, audio_start_ms: float) -> None:
        turn = await self._open_turn()
        turn.user_started_speaking()
        self._speaking = turn
        self._speech_start_ms = max(audio_start_ms, self._input.start_ms)
        await self._publish(SpeechStartedEvent(turn.item_id, int(audio_start_ms)))
        if self.responding and self.settings.interrupt_response and self._replying is not None:
            detected_at = time.perf_counter()
            await self._replying.cancel("turn_detected")
            stop_s = time.perf_counter() - detected_at
            await self._measure(StageMeasured("voxray_barge_in_stop_latency_seconds", stop_s))

    async def _on_speech_stopped(self, audio_end_ms: float, speech_end_ms: float) -> None:
        speech_end_at = self._wall_time(speech_end_ms)
        turn = self._speaking or await self._open_turn()
        start_ms = self._speech_start_ms if self._speech_start_ms is not None else self._input.start_ms
        await self._publish(SpeechStoppedEvent(turn.item_id, int(audio_end_ms)))
        utterance = Utterance(self._input.slice(start_ms, audio_end_ms), start_ms, audio_end_ms)
        self._input.drop_until(audio_end_ms)
        self._speaking = None
        self._speech_start_ms = None
        timings = {"endpointing_ms": _ms_since(speech_end_at)}
        await self._measure(
            StageMeasured("voxray_endpointing_wait_seconds", timings["endpointing_ms"] / 1000)
        )
        reply = self.settings.create_response and not self.responding
        pending = self._pending_transcripts()
        if reply:
            self._replying = turn
        await turn.end_of_speech(
            utterance, reply=reply, speech_end_at=speech_end_at, timings=timings, pending=pending
        )

    async def _speculate(self, speech_end_ms: float) -> None:
        """On a pause, transcribe and start answering behind a closed gate (see speculation.py)."""
        turn = self._speaking
        if turn is None:
            return
        await turn.drop_speculation()
        if (
            not self._config.session.speculative_turns
            or not self.settings.create_response
            or self.responding
            or self._pending_transcripts()
        ):
            return
        start_ms = self._speech_start_ms if self._speech_start_ms is not None else self._input.start_ms
        utterance = Utterance(self._input.slice(start_ms, self._input.end_ms), start_ms, self._input.end_ms)
        turn.speculate(utterance, self._wall_time(speech_end_ms))

    # -- input -------------------------------------------------------------------------------

    def _wall_time(self, stream_ms: float) -> float:
        """``perf_counter`` time at which stream time ``stream_ms`` arrived (approximately)."""
        return time.perf_counter() - max(0.0, self._input.end_ms - stream_ms) / 1000

    def _reset_input(self) -> None:
        self._input.clear()
        self._speech_start_ms = None
        self._vad.reset()


def _not_found(item_id: str) -> RequestRefused:
    return RequestRefused("item_not_found", f"Item '{item_id[:100]}' does not exist.", "item_id")


def _ms_since(instant: float) -> float:
    return round((time.perf_counter() - instant) * 1000, 1)
