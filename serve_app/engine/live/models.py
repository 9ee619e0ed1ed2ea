"""The model calls of one live transcription session: ASR decodes and speaker labels."""

from __future__ import annotations

import logging
from typing import Any

from deployments.types import DecodeOptions, SpeakerEmbeddings, Transcript
from serve_app.engine.events import ErrorOccurred, EventSink, TimedWord
from serve_app.engine.input_buffer import InputBuffer
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.model_clients import client_error_text

logger = logging.getLogger("voxray")

ASR_RATE = 16_000
_MIN_DECODE_BYTES = ASR_RATE // 10 * 2  # under 100 ms there is nothing to hear


class LiveModels:
    """Decodes stretches of a session's audio and labels their words with speakers.

    Args:
        asr: Speech recognition (the ASR deployment's handle or a backend).
        labeller: Speaker labels; ``None`` leaves words unlabelled.
        audio: The session's audio at ``ASR_RATE``, addressed by stream time.
        emit: Receives an ``ErrorOccurred`` when ASR fails.
    """

    def __init__(
        self, asr: Any, labeller: SpeakerLabeller | None, audio: InputBuffer, emit: EventSink
    ) -> None:
        self._asr = asr
        self._labeller = labeller
        self._audio = audio
        self._emit = emit

    async def decode(
        self, start_ms: float, end_ms: float, language: str | None, draft: bool
    ) -> Transcript | None:
        """Transcribe the audio between two stream times, with word times.

        Returns:
            The transcript; ``None`` when ASR failed (the error was announced).
        """
        pcm = self._audio.slice(start_ms, end_ms)
        if len(pcm) < _MIN_DECODE_BYTES:
            return Transcript(text="")
        options = DecodeOptions(word_timestamps=True, draft=draft)
        try:
            transcript = await self._asr.transcribe(pcm, ASR_RATE, language, options)
        except Exception as exc:
            logger.exception("live transcription: ASR failed")
            detail = client_error_text(exc)
            await self._emit(ErrorOccurred("server_error", "transcription_failed", f"ASR failed: {detail}"))
            return None
        logger.debug(
            "live decode %.0f-%.0f ms (%s) in %.0f ms: %s",
            start_ms,
            end_ms,
            "draft" if draft else "final",
            transcript.processing_s * 1000,
            transcript.text,
        )
        return transcript

    async def embed(self, start_ms: float, end_ms: float) -> SpeakerEmbeddings | None:
        """Speaker embeddings of the audio between two stream times (``None``: no labeller)."""
        if self._labeller is None:
            return None
        return await self._labeller.embed(self._audio.slice(start_ms, end_ms), ASR_RATE)

    def apply(
        self, words: list[TimedWord], embeddings: SpeakerEmbeddings | None, start_ms: float
    ) -> list[TimedWord]:
        """``words`` labelled from the embeddings of their audio, which starts at ``start_ms``."""
        if self._labeller is None or not words:
            return words
        return self._labeller.apply(words, embeddings, start_ms)

    async def label(self, words: list[TimedWord], start_ms: float, end_ms: float) -> list[TimedWord]:
        """``words`` (spoken between two stream times) with speaker labels."""
        if self._labeller is None or not words:
            return words
        return self.apply(words, await self.embed(start_ms, end_ms), start_ms)

    def guess(self, words: list[TimedWord]) -> list[TimedWord]:
        """Provisional labels for partial words."""
        return words if self._labeller is None else self._labeller.guess(words)
