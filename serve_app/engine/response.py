"""One assistant response: LLM text → phrases → TTS audio → the client, cancellable at once.

The LLM stream and the TTS calls run concurrently: a producer task cuts LLM deltas into
phrases and queues them while a consumer synthesizes each finished phrase and streams its
audio, so the first audio leaves long before the LLM is done. Cancelling (barge-in,
``response.cancel``) cancels both tasks; the model clients pass the cancellation on to the
replicas, which abort the engines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from deployments.logs import log_event
from deployments.types import ChatMessage, SamplingParams
from serve_app.engine.audio.pcm import StreamResampler
from serve_app.engine.conversation import Item, new_id
from serve_app.engine.events import (
    ErrorOccurred,
    EventSink,
    ReplyAudio,
    ReplyDone,
    ReplyStarted,
    ReplyStatus,
    ReplyText,
    StageMeasured,
)
from serve_app.engine.model_clients import ModelClients, client_error_text
from serve_app.engine.text import PhraseSplitter, clean_for_speech
from serve_app.observability.metrics import PipelineLabels

logger = logging.getLogger("voxray")


@dataclass
class ReplyOverrides:
    """Settings for one reply only (OpenAI's ``response.create`` ``response`` object).

    ``None`` fields keep the session's setting.
    """

    instructions: str | None = None
    output_modalities: list[str] | None = None
    max_output_tokens: int | str | None = None
    voice: str | None = None


@dataclass
class ResponsePlan:
    """What one response is asked to do."""

    messages: list[ChatMessage]
    params: SamplingParams
    voice: str | None
    output_rate: int
    audio: bool = True
    max_audio_lead_s: float = 1.5
    first_phrase_max_words: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Stage timings (ms) already known when the response starts, e.g. ASR and endpointing."""
    started_at: float = field(default_factory=time.perf_counter)
    """Reference instant for the timings: end of user speech, or ``response.create``."""
    session_id: str = ""
    labels: PipelineLabels | None = None
    """The model stages' metric labels; ``None`` records no stage metrics."""
    fixed_text: str | None = None
    """Speak this instead of asking the LLM (a greeting)."""


def plan_response(
    state: Any,
    config: Any,
    conversation: Any,
    overrides: ReplyOverrides | None,
    started_at: float,
    timings: dict[str, float],
) -> ResponsePlan:
    """What the next reply should do, from the session settings and the reply's overrides.

    Args:
        state: The session's settings (``serve_app.engine.settings.SessionSettings``).
        config: The ``AppConfig``.
        conversation: The session's ``Conversation`` (the history).
        overrides: Settings for this reply only, if any.
        started_at: Reference instant of the timings (end of user speech).
        timings: Stage timings known so far; the reply adds its own to this dict.
    """
    overrides = overrides or ReplyOverrides()
    instructions = overrides.instructions or state.instructions
    return ResponsePlan(
        messages=conversation.messages(instructions),
        params=SamplingParams(
            max_tokens=_max_tokens(overrides.max_output_tokens, state, config),
            temperature=config.llm.temperature,
        ),
        voice=overrides.voice or state.voice,
        output_rate=state.output_rate,
        audio="audio" in (overrides.output_modalities or state.output_modalities),
        max_audio_lead_s=config.session.max_audio_lead_ms / 1000,
        first_phrase_max_words=config.session.first_phrase_max_words,
        timings=timings,
        started_at=started_at,
        session_id=state.id,
        labels=PipelineLabels.from_config(config),
    )


def assistant_item(plan: ResponsePlan) -> Item:
    """A new, in-progress assistant item for a response following ``plan``."""
    return Item(
        id=new_id("item"),
        role="assistant",
        modality="audio" if plan.audio else "text",
        status="in_progress",
    )


def _max_tokens(override: int | str | None, state: Any, config: Any) -> int:
    """Reply length cap: the response's, else the session's, else the config's ("inf" too)."""
    for limit in (override, state.max_output_tokens):
        if isinstance(limit, int):
            return limit
    return config.llm.max_tokens


class ResponseRun:
    """Runs one reply and publishes its events; ``cancel`` stops it at once.

    Args:
        models: The model endpoints.
        plan: What to do.
        item: The assistant item the reply fills.
        emit: Receives the reply's events (the session's sink, or a speculation's gate).
        observe: Receives the measurements (``StageMeasured``), never gated: speculative
            model work is real work either way.
    """

    def __init__(
        self, models: ModelClients, plan: ResponsePlan, item: Item, emit: EventSink, observe: EventSink
    ) -> None:
        self.id = new_id("resp")
        self.item = item
        self.status: ReplyStatus = "completed"
        self.error: str | None = None
        self._models = models
        self._plan = plan
        self._emit = emit
        self._observe = observe
        self._timings = plan.timings  # shared: the session adds stages it learns later
        self._cancel_reason: str | None = None
        self._pipeline: asyncio.Task[None] | None = None
        self._spoken: list[str] = []
        self._audio_s = 0.0
        self._first_audio_at: float | None = None
        self._output_tokens = 0

    @property
    def spoken_text(self) -> str:
        """The part of the reply whose audio (or text) has gone to the client."""
        return "".join(self._spoken).strip()

    @property
    def cancelling(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel_reason is not None

    def released(self) -> None:
        """The held events are about to go out (speculative turn confirmed): audio starts now.

        Restarts the pacing clock, so the audio made behind the gate counts as lead, and
        moves ``first_audio_ms`` to when the client really gets the first audio.
        """
        if self._first_audio_at is not None:
            self._first_audio_at = time.perf_counter()
            self._timings["first_audio_ms"] = self._ms_since_start()

    def cancel(self, reason: str) -> None:
        """Stop generating and speaking now; ``run`` then publishes the cancelled ending."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._pipeline is not None:
            self._pipeline.cancel()

    async def run(self) -> None:
        """Publish the reply's events around the pipeline, whatever way it ends."""
        await self._emit(ReplyStarted(self.id, self.item.snapshot(), self._plan.audio))
        self._pipeline = asyncio.create_task(self._run_pipeline())
        if self._cancel_reason is not None:
            self._pipeline.cancel()
        try:
            await self._pipeline
        except asyncio.CancelledError:
            if self._cancel_reason is None:
                raise  # the session itself is closing: nothing more to say
            self.status = "cancelled"
        except Exception as exc:  # a model failure becomes events, never a dropped socket
            logger.exception("response %s failed", self.id)
            self.status = "failed"
            self.error = client_error_text(exc)
            await self._emit(ErrorOccurred("server_error", "model_error", f"Response failed: {self.error}"))
        await self._finish()

    async def _finish(self) -> None:
        self._timings["total_ms"] = self._ms_since_start()
        self.item.text = self.spoken_text
        self.item.status = "completed" if self.status == "completed" else "incomplete"
        self.item.audio_ms = int(self._audio_s * 1000)
        done = ReplyDone(
            response_id=self.id,
            item=self.item.snapshot(),
            audio=self._plan.audio,
            status=self.status,
            reason=self._cancel_reason,
            error=self.error,
            spoken_text=self.spoken_text,
            output_tokens=self._output_tokens,
            timings=self._timings,
        )
        await self._emit(done)

    async def _run_pipeline(self) -> None:
        phrases: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        producer = asyncio.create_task(self._produce_phrases(phrases))
        try:
            await self._consume_phrases(phrases)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce_phrases(self, phrases: asyncio.Queue[str | BaseException | None]) -> None:
        """LLM deltas → finished phrases on the queue; an exception travels as an item."""
        splitter = PhraseSplitter(first_max_words=self._plan.first_phrase_max_words)
        if self._plan.fixed_text is not None:
            for phrase in [*splitter.push(self._plan.fixed_text), splitter.flush()]:
                if phrase:
                    await phrases.put(phrase)
            await phrases.put(None)
            return
        log_event(
            "llm_input",
            {"session_id": self._plan.session_id, "turn_id": self.id, "messages": self._plan.messages},
            level=logging.DEBUG,
        )
        called_at = time.perf_counter()
        first_at: float | None = None
        try:
            async for delta in self._models.llm.chat(self._plan.messages, self._plan.params):
                if first_at is None:
                    first_at = time.perf_counter()
                    self._timings["llm_first_token_ms"] = self._ms_since_start()
                    await self._record_stage(
                        "llm", "voxray_llm_time_to_first_token_seconds", first_at - called_at
                    )
                self._output_tokens += 1
                for phrase in splitter.push(delta):
                    self._timings.setdefault("first_phrase_ms", self._ms_since_start())
                    await phrases.put(phrase)
            await self._record_llm_rate(first_at)
            rest = splitter.flush()
            if rest:
                self._timings.setdefault("first_phrase_ms", self._ms_since_start())
                await phrases.put(rest)
        except Exception as exc:
            await phrases.put(exc)
        finally:
            await phrases.put(None)

    async def _record_stage(self, stage: str, name: str, value: float) -> None:
        if self._plan.labels is not None:
            await self._observe(StageMeasured(name, value, getattr(self._plan.labels, stage).tags()))

    async def _record_llm_rate(self, first_at: float | None) -> None:
        """Deltas per second after the first, for a stream that ended normally."""
        if first_at is None or self._output_tokens < 2:
            return
        elapsed = time.perf_counter() - first_at
        if elapsed > 0:
            await self._record_stage(
                "llm", "voxray_llm_tokens_per_second", (self._output_tokens - 1) / elapsed
            )

    async def _consume_phrases(self, phrases: asyncio.Queue[str | BaseException | None]) -> None:
        while (phrase := await phrases.get()) is not None:
            if isinstance(phrase, BaseException):
                raise phrase
            if self._plan.audio:
                await self._speak(phrase)
            else:
                await self._send_text(phrase)

    async def _send_text(self, phrase: str) -> None:
        text = self._with_separator(phrase)
        self._spoken.append(text)
        await self._emit(ReplyText(self.id, self.item.id, text, self._plan.audio))

    async def _speak(self, phrase: str) -> None:
        """Synthesize one phrase and stream it; its transcript goes out with its first audio."""
        speech = clean_for_speech(phrase)
        if not speech:
            await self._send_text(phrase)
            return
        resampler: StreamResampler | None = None
        announced = False
        waited_s = 0.0  # time blocked on the TTS stream: not our own sending and pacing
        synthesized_s = 0.0
        asked_at = time.perf_counter()
        async for chunk in self._models.tts.synthesize(speech, self._plan.voice):
            waited_s += time.perf_counter() - asked_at
            synthesized_s += len(chunk.pcm16) / 2 / chunk.sample_rate
            if resampler is None:
                resampler = StreamResampler(chunk.sample_rate, self._plan.output_rate)
                self._timings.setdefault("tts_first_chunk_ms", self._ms_since_start())
                await self._record_stage("tts", "voxray_tts_time_to_first_chunk_seconds", waited_s)
            if not announced:
                await self._send_text(phrase)
                announced = True
            await self._send_audio(resampler.process(chunk.pcm16))
            asked_at = time.perf_counter()
        if synthesized_s > 0:
            waited_s += time.perf_counter() - asked_at  # the wait for the stream's end
            await self._record_stage("tts", "voxray_tts_real_time_factor", waited_s / synthesized_s)
        if resampler is not None:
            await self._send_audio(resampler.flush())
        if not announced:
            await self._send_text(phrase)
        self.item.phrase_audio_ms.append((self._spoken[-1], int(self._audio_s * 1000)))

    async def _send_audio(self, pcm16: bytes) -> None:
        if not pcm16:
            return
        await self._pace()
        if self._first_audio_at is None:
            self._first_audio_at = time.perf_counter()
            self._timings["first_audio_ms"] = self._ms_since_start()
        self._audio_s += len(pcm16) / 2 / self._plan.output_rate
        await self._emit(ReplyAudio(self.id, self.item.id, pcm16, self._plan.output_rate))

    async def _pace(self) -> None:
        """Keep at most ``max_audio_lead_s`` of audio ahead of real-time playback.

        Audio the client has not received yet can still be withdrawn on barge-in, so the
        history and the client agree on what the user heard. 0 disables pacing.
        """
        lead = self._plan.max_audio_lead_s
        if not lead or self._first_audio_at is None:
            return
        ahead = self._audio_s - (time.perf_counter() - self._first_audio_at)
        if ahead > lead:
            await asyncio.sleep(ahead - lead)

    def _with_separator(self, phrase: str) -> str:
        if self._spoken and not phrase[:1].isspace() and not self._spoken[-1][-1:].isspace():
            return " " + phrase
        return phrase

    def _ms_since_start(self) -> float:
        return round((time.perf_counter() - self._plan.started_at) * 1000, 1)
