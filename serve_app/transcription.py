"""Transcribing one committed utterance and telling the client, for a Session.

Split from ``session.py``: the Session decides *when* audio becomes a user item; this
runs the ASR round trip and publishes the transcript (or the failure) on that item.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from deployments.logs import log_event
from deployments.types import Transcript
from serve_app import metrics
from serve_app.audio import resample_pcm16
from serve_app.conversation import Item
from serve_app.model_clients import ModelClients, client_error_text
from serve_app.protocol import realtime as rt

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
ASR_RATE = 16_000


class Transcriber:
    """Runs ASR for a session's utterances.

    Args:
        models: The model endpoints (``asr`` is used).
        state: The session's ``SessionState`` (input rate, language).
        default_language: ``asr.language`` of the config; ``None`` detects the language.
        emit: Sends one server event to the client.
        labels: The ASR stage's metric labels; ``None`` records no metrics.
    """

    def __init__(
        self,
        models: ModelClients,
        state: Any,
        default_language: str | None,
        emit: Emit,
        labels: metrics.StageLabels | None = None,
    ) -> None:
        self._labels = labels
        self._models = models
        self._state = state
        self._default_language = default_language
        self._emit = emit

    def start(self, audio: bytes) -> asyncio.Task[Transcript]:
        """Start transcribing input-rate PCM16 ``audio``."""
        return asyncio.create_task(self._transcribe(audio))

    async def _transcribe(self, audio: bytes) -> Transcript:
        """Run ASR; ``processing_s`` is the whole round trip."""
        started = time.perf_counter()
        pcm16k = resample_pcm16(audio, self._state.input_rate, ASR_RATE)
        language = self._state.language or self._default_language
        try:
            transcript = await self._models.asr.transcribe(pcm16k, ASR_RATE, language)
        except Exception:
            self._record(time.perf_counter() - started, "error")
            raise
        transcript.processing_s = time.perf_counter() - started
        self._record(transcript.processing_s, "ok")
        return transcript

    def _record(self, seconds: float, outcome: str) -> None:
        if self._labels is not None:
            metrics.record("voxray_asr_latency_seconds", seconds, outcome=outcome, **self._labels.tags())

    async def publish(self, item: Item, asr: asyncio.Task[Transcript]) -> Transcript | None:
        """Wait for the item's transcription and tell the client; ``None`` if it failed."""
        try:
            transcript = await asr
        except Exception as exc:
            logger.exception("transcription of %s failed", item.id)
            item.status = "incomplete"
            detail = client_error_text(exc)
            await self._emit(rt.transcription_failed(item.id, detail))
            await self._emit(rt.error_event("server_error", "transcription_failed", f"ASR failed: {detail}"))
            return None
        item.text = transcript.text
        item.status = "completed"
        log_event(
            "transcript",
            {"session_id": self._state.id, "item_id": item.id, "text": transcript.text},
            level=logging.DEBUG,
        )
        await self._emit(rt.transcription_completed(item.id, transcript.text, item.audio_ms / 1000))
        await self._emit(rt.conversation_item_done(item))
        return transcript
