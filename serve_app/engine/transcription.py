"""Transcribing one committed utterance and announcing the transcript, for a Turn.

The Turn decides *when* audio becomes a user item; this runs the ASR round trip and
publishes the transcript (or the failure) on that item as engine events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from deployments.logs import log_event
from deployments.types import Transcript
from serve_app.engine.audio.pcm import resample_pcm16
from serve_app.engine.conversation import Item
from serve_app.engine.events import ErrorOccurred, EventSink, StageMeasured, TranscriptFailed, TranscriptFinal
from serve_app.engine.model_clients import ModelClients, client_error_text
from serve_app.observability import metrics

logger = logging.getLogger("voxray")

ASR_RATE = 16_000


class Transcriber:
    """Runs ASR for a session's utterances.

    Args:
        models: The model endpoints (``asr`` is used).
        state: The session's settings (input rate, language).
        default_language: ``asr.language`` of the config; ``None`` detects the language.
        emit: Receives the transcript events.
        observe: Receives the ASR latency measurements.
        labels: The ASR stage's metric labels; ``None`` records no metrics.
    """

    def __init__(
        self,
        models: ModelClients,
        state: Any,
        default_language: str | None,
        emit: EventSink,
        observe: EventSink,
        labels: metrics.StageLabels | None = None,
    ) -> None:
        self._observe = observe
        self._labels = labels
        self._models = models
        self._state = state
        self._default_language = default_language
        self._emit = emit

    async def transcribe(self, audio: bytes) -> Transcript | Exception:
        """Run ASR on input-rate PCM16 ``audio``; ``processing_s`` is the whole round trip.

        A failure is returned, not raised: it is an outcome the turn reports, and a raising
        task would tear down every other task of the turn's task group.
        """
        started = time.perf_counter()
        pcm16k = resample_pcm16(audio, self._state.input_rate, ASR_RATE)
        language = self._state.language or self._default_language
        try:
            transcript = await self._models.asr.transcribe(pcm16k, ASR_RATE, language)
        except Exception as exc:
            await self._record(time.perf_counter() - started, "error")
            return exc
        transcript.processing_s = time.perf_counter() - started
        await self._record(transcript.processing_s, "ok")
        return transcript

    async def _record(self, seconds: float, outcome: str) -> None:
        if self._labels is not None:
            tags = {"outcome": outcome, **self._labels.tags()}
            await self._observe(StageMeasured("voxray_asr_latency_seconds", seconds, tags))

    async def publish(
        self,
        item: Item,
        asr: asyncio.Task[Transcript | Exception],
        audio_start_ms: float,
        audio_end_ms: float,
    ) -> Transcript | None:
        """Wait for the item's transcription and announce it; ``None`` if it failed."""
        transcript = await asr
        if isinstance(transcript, Exception):
            exc = transcript
            logger.error("transcription of %s failed", item.id, exc_info=exc)
            item.status = "incomplete"
            detail = client_error_text(exc)
            await self._emit(TranscriptFailed(item.snapshot(), detail))
            await self._emit(ErrorOccurred("server_error", "transcription_failed", f"ASR failed: {detail}"))
            return None
        item.text = transcript.text
        item.status = "completed"
        log_event(
            "transcript",
            {"session_id": self._state.id, "item_id": item.id, "text": transcript.text},
            level=logging.DEBUG,
        )
        await self._emit(TranscriptFinal(item.snapshot(), transcript.text, audio_start_ms, audio_end_ms))
        return transcript
