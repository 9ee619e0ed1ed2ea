"""Scripted fake backends, for tests and for measuring orchestration without model cost.

These are fakes and say so: they produce deterministic text and a quiet tone instead of
recognising or speaking. Latencies are configurable so a benchmark can simulate a GPU
deployment's profile (``asr_ms``, ``first_token_ms`` + ``tokens_per_s``, ``first_chunk_ms`` +
``realtime_factor``) and tests can script failures.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.types import (
    AudioChunk,
    ChatMessage,
    DecodeOptions,
    SamplingParams,
    SpeakerEmbeddings,
    Transcript,
    Word,
)


class _StreamTracker:
    """Counts streams in flight and streams abandoned before their end (cancelled)."""

    def __init__(self) -> None:
        self.active = 0
        self.aborted = 0

    async def track(self, stream: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
        """Yield from ``stream``, counting it as active meanwhile and aborted if left early."""
        self.active += 1
        finished = False
        try:
            async for item in stream:
                yield item
            finished = True
        finally:
            self.active -= 1
            if not finished:
                self.aborted += 1
                await stream.aclose()


class FakeASR(Backend):
    """Returns scripted transcripts in turn (cycling), after ``delay_ms``."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        transcripts: list[str] = Field(default_factory=lambda: ["What is the capital of France?"])
        delay_ms: float = Field(default=0.0, ge=0)
        fail: bool = False

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self._calls = 0

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Return the next scripted transcript (words spread evenly when word times are asked)."""
        started = time.perf_counter()
        if self.options.delay_ms:
            await asyncio.sleep(self.options.delay_ms / 1000)
        if self.options.fail:
            raise RuntimeError("FakeASR scripted failure")
        text = self.options.transcripts[self._calls % len(self.options.transcripts)]
        self._calls += 1
        duration = len(pcm16) / 2 / sample_rate
        words: list[Word] = []
        if options is not None and options.word_timestamps:
            tokens = text.split()
            step = duration / max(1, len(tokens))
            words = [Word(text=t, start_s=i * step, end_s=(i + 1) * step) for i, t in enumerate(tokens)]
        return Transcript(
            text=text,
            language=language,
            audio_duration_s=duration,
            processing_s=time.perf_counter() - started,
            words=words,
        )

    def stats(self) -> dict[str, Any]:
        """Number of transcribe calls so far."""
        return {"calls": self._calls}


class FakeBatchASR(FakeASR):
    """:class:`FakeASR` that transcribes in batches, as NeMo does on a GPU: a test fake.

    The ASR deployment groups concurrent calls to it with ``@serve.batch``, so tests and the
    live transcription benchmark exercise the GPU batching path on the CPU. ``stats()``
    counts the batches and their sizes.
    """

    class Options(FakeASR.Options):
        max_batch_size: int = Field(default=16, ge=1)
        batch_wait_timeout_s: float = Field(default=0.02, ge=0.0)

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self.batch_sizes: list[int] = []

    @property
    def max_batch_size(self) -> int:
        """Most utterances per batch."""
        return self.options.max_batch_size

    @property
    def batch_wait_timeout_s(self) -> float:
        """How long the deployment waits to fill a batch."""
        return self.options.batch_wait_timeout_s

    async def transcribe_batch(self, items: Sequence[tuple[bytes, int, str | None]]) -> list[Transcript]:
        """One scripted transcript per item (no word times: as the NeMo backend here)."""
        self.batch_sizes.append(len(items))
        return [await self.transcribe(pcm16, rate, language) for pcm16, rate, language in items]

    def stats(self) -> dict[str, Any]:
        """Calls, batches and the largest batch so far."""
        sizes = self.batch_sizes
        return {**super().stats(), "batches": len(sizes), "max_batch": max(sizes, default=0)}


class FakeLLM(Backend):
    """Streams a scripted reply word by word with a first-token delay and a token rate.

    ``reply`` may contain ``{user}``: the last user message's text.
    """

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        reply: str = "You said: {user} That is a fine question, and here is a short answer to it."
        first_token_ms: float = Field(default=0.0, ge=0)
        tokens_per_s: float = Field(default=0.0, ge=0, description="0: no delay between tokens")
        fail_after_tokens: int | None = Field(default=None, ge=0)

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self._streams = _StreamTracker()
        self._tokens = 0

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the scripted reply; each word (with its leading space) is one token."""
        return self._streams.track(self._generate(messages, params))

    async def _generate(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = self.options.reply.format(user=user).split(" ")
        if self.options.first_token_ms:
            await asyncio.sleep(self.options.first_token_ms / 1000)
        for index, word in enumerate(words[: params.max_tokens]):
            if self.options.fail_after_tokens is not None and index >= self.options.fail_after_tokens:
                raise RuntimeError("FakeLLM scripted failure")
            if index and self.options.tokens_per_s:
                await asyncio.sleep(1 / self.options.tokens_per_s)
            self._tokens += 1
            yield word if index == 0 else " " + word

    def stats(self) -> dict[str, Any]:
        """Active and aborted generations and tokens produced, for cancellation tests."""
        return {
            "active_generations": self._streams.active,
            "tokens_generated": self._tokens,
            "aborted_generations": self._streams.aborted,
        }


class FakeTTS(Backend):
    """Synthesizes a quiet tone whose length follows the text, in real-time-factor paced chunks."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        sample_rate: int = Field(default=22050, gt=0)
        ms_per_char: float = Field(default=60.0, gt=0, description="audio length per character")
        chunk_ms: float = Field(default=100.0, gt=0)
        first_chunk_ms: float = Field(default=0.0, ge=0)
        realtime_factor: float = Field(default=0.0, ge=0, description="synthesis seconds per audio second")
        tone_hz: float = 220.0
        fail: bool = False

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self._streams = _StreamTracker()
        self._chunks = 0

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream a tone of ``len(text) * ms_per_char`` milliseconds."""
        return self._streams.track(self._tone(text))

    async def _tone(self, text: str) -> AsyncIterator[AudioChunk]:
        opts = self.options
        total = int(opts.sample_rate * len(text) * opts.ms_per_char / 1000)
        per_chunk = max(1, int(opts.sample_rate * opts.chunk_ms / 1000))
        if opts.fail:
            raise RuntimeError("FakeTTS scripted failure")
        if opts.first_chunk_ms:
            await asyncio.sleep(opts.first_chunk_ms / 1000)
        for start in range(0, total, per_chunk):
            count = min(per_chunk, total - start)
            if start and opts.realtime_factor:
                await asyncio.sleep(count / opts.sample_rate * opts.realtime_factor)
            t = (np.arange(start, start + count) / opts.sample_rate).astype(np.float32)
            tone = (0.1 * 32767 * np.sin(2 * math.pi * opts.tone_hz * t)).astype("<i2")
            self._chunks += 1
            yield AudioChunk(pcm16=tone.tobytes(), sample_rate=opts.sample_rate)

    def stats(self) -> dict[str, Any]:
        """Active and aborted syntheses and chunks produced, for cancellation tests."""
        return {
            "active_syntheses": self._streams.active,
            "chunks": self._chunks,
            "aborted_syntheses": self._streams.aborted,
        }


class FakeSpeaker(Backend):
    """Speaker "embeddings" that are only each window's spectrum in a few bands: a test fake.

    Two tones of different pitch come out as different speakers, the same tone as the same
    one, which is all the serve tests need; real voices need a real model (``resemblyzer``).
    """

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        window_s: float = Field(default=1.0, gt=0)
        hop_s: float = Field(default=0.5, gt=0)
        bands: int = Field(default=16, ge=2)

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """One unit vector of band energies per window."""
        import numpy as np

        audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32)
        size, hop = round(self.options.window_s * sample_rate), round(self.options.hop_s * sample_rate)
        if audio.size < size // 2:
            return SpeakerEmbeddings()
        starts = range(0, max(1, audio.size - size + 1), hop)
        result = SpeakerEmbeddings()
        for start in starts:
            spectrum = np.abs(np.fft.rfft(audio[start : start + size]))
            energy = np.array([band.sum() for band in np.array_split(spectrum, self.options.bands)])
            vector = energy / (np.linalg.norm(energy) or 1.0)
            result.starts_s.append(start / sample_rate)
            result.ends_s.append(min(audio.size, start + size) / sample_rate)
            result.vectors.append(vector.tolist())
        return result
