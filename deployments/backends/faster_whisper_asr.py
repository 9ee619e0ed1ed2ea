"""faster-whisper (CTranslate2) speech recognition, the embedded CPU ASR.

One utterance in, one transcript out. Decoding is tuned for latency rather than long-form
accuracy: greedy search, no timestamps and no conditioning on previous text, since the
Ingress already cuts the audio into single utterances with VAD.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.models import is_local_spec, resolve_model
from deployments.types import Transcript

DEFAULT_MODEL = "bundled:whisper-base"
WHISPER_RATE = 16_000


class FasterWhisperOptions(BaseModel):
    """Options of :class:`FasterWhisperASR`.

    Attributes:
        device: CTranslate2 device (``cpu``, ``cuda`` or ``auto``).
        compute_type: CTranslate2 compute type; ``int8`` is the fast choice on CPU.
        cpu_threads: Threads used by CTranslate2 on CPU.
        beam_size: Beam width; 1 is greedy decoding, the lowest latency.
        vad_filter: Run faster-whisper's own VAD first (the Ingress already does VAD).
    """

    model_config = ConfigDict(extra="forbid")

    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(default=2, ge=1)
    beam_size: int = Field(default=1, ge=1)
    vad_filter: bool = False


class FasterWhisperASR(Backend):
    """Transcribe one utterance with faster-whisper.

    Args:
        model: ``bundled:<name>`` (default ``bundled:whisper-base``), a local CTranslate2
            model directory, or anything faster-whisper accepts itself (a size name such as
            ``"small"`` or a Hugging Face repo id, downloaded by faster-whisper).
        options: See :class:`FasterWhisperOptions`.
    """

    Options = FasterWhisperOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from faster_whisper import WhisperModel

        opts: FasterWhisperOptions = self.options
        spec = self.model_spec
        self.model_path = str(resolve_model(spec)) if is_local_spec(spec) else spec
        self._model = WhisperModel(
            self.model_path,
            device=opts.device,
            compute_type=opts.compute_type,
            cpu_threads=opts.cpu_threads,
            num_workers=1,
        )
        # One worker: CTranslate2 already uses cpu_threads per call, and queueing calls
        # keeps one replica from oversubscribing its CPUs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._active = 0
        self._done = 0

    async def transcribe(self, pcm16: bytes, sample_rate: int, language: str | None) -> Transcript:
        """Transcribe mono PCM16 little-endian audio at any sample rate.

        Args:
            pcm16: The utterance.
            sample_rate: Its sample rate; resampled to 16 kHz when different.
            language: ISO code such as ``"en"``; ``None`` lets Whisper detect it.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcribe, pcm16, sample_rate, language)

    def _transcribe(self, pcm16: bytes, sample_rate: int, language: str | None) -> Transcript:
        import numpy as np

        started = time.perf_counter()
        duration = len(pcm16) / 2 / sample_rate
        # An odd trailing byte cannot be a sample; drop it rather than fail the turn.
        audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if audio.size == 0:
            return Transcript(text="", language=language, audio_duration_s=0.0, processing_s=0.0)
        if sample_rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, WHISPER_RATE).astype(np.float32, copy=False)
        opts: FasterWhisperOptions = self.options
        # Counters are only written by the single worker thread.
        self._active += 1
        try:
            segments, info = self._model.transcribe(
                audio,
                language=language,
                beam_size=opts.beam_size,
                vad_filter=opts.vad_filter,
                without_timestamps=True,
                condition_on_previous_text=False,
            )
            # segments is lazy: decoding happens while it is consumed.
            text = "".join(segment.text for segment in segments).strip()
        finally:
            self._active -= 1
            self._done += 1
        return Transcript(
            text=text,
            language=info.language,
            audio_duration_s=duration,
            processing_s=time.perf_counter() - started,
        )

    async def warmup(self) -> None:
        """Transcribe one second of silence."""
        await self.transcribe(bytes(2 * WHISPER_RATE), WHISPER_RATE, "en")

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_transcriptions`` and ``transcriptions`` (finished)."""
        return {"active_transcriptions": self._active, "transcriptions": self._done}
