"""What the speaker embedding backends share: the window layout and the call plumbing.

Both backends cut the audio into overlapping windows counted in 10 ms frames (one every
``hop_s``, plus one ending where the audio ends) and embed them all in one go on a single
worker thread. :func:`window_layout` places the windows, and :class:`WindowedSpeakerBackend`
holds the rest: resampling, the worker thread, counters, warmup and turning window positions
into :class:`~deployments.types.SpeakerEmbeddings`. A backend supplies ``sample_rate`` and
:meth:`~WindowedSpeakerBackend.embed_audio`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import numpy as np

from deployments.backends.base import Backend
from deployments.types import SpeakerEmbeddings
from serve_app.engine.audio.pcm import pcm16_to_float32, resample_pcm16

FRAMES_PER_S = 100  # window positions are counted in 10 ms frames


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """First frames of the windows over ``n_frames`` frames: every ``hop``, plus one flush with the end.

    The last window is moved back to end with the audio, so that the end of an utterance
    (often its last word) has a window of its own rather than none.

    Args:
        n_frames: Length of the audio in frames.
        window: Length of a window in frames.
        hop: Distance between window starts in frames.

    Returns:
        The first frame of each window, ascending; none when the audio is shorter than a window.
    """
    starts = list(range(0, n_frames - window + 1, hop))
    if starts and starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def window_layout(n_frames: int, window: int, hop: int, pad_short: bool) -> tuple[list[int], int]:
    """The windows over the audio, including audio shorter than one window.

    Args:
        n_frames: Length of the audio in frames.
        window: Length of a window in frames.
        hop: Distance between window starts in frames.
        pad_short: What audio shorter than a window gets: one full-length window (the caller
            zero-pads the audio to it) when true, else one window over just the audio.

    Returns:
        The windows' first frames (see :func:`window_starts`) and their length in frames.
    """
    starts = window_starts(n_frames, window, hop)
    if starts:
        return starts, window
    return [0], window if pad_short else n_frames


class WindowedSpeakerBackend(Backend):
    """Base of the speaker backends: embeds on one worker thread, resampling and counting.

    Subclasses set ``sample_rate`` (the model's) in their constructor and implement
    :meth:`embed_audio`; their ``Options`` have ``window_s``, ``hop_s`` and ``min_audio_s``.

    Attributes:
        thread_name: Name prefix of the worker thread.
        warmup_s: Seconds of quiet noise that :meth:`warmup` embeds.
    """

    thread_name: ClassVar[str] = "speaker"
    warmup_s: ClassVar[float] = 1.0
    sample_rate: int

    def __init__(self, model: str | None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        # One worker: calls queue rather than oversubscribe the cores or share the device.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        self._calls = 0
        self._windows = 0
        self._audio_s = 0.0
        self._busy_s = 0.0

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed overlapping windows of mono PCM16 audio at any sample rate.

        Args:
            pcm16: The audio (resampled to the model's rate when at another rate).
            sample_rate: Its sample rate.

        Returns:
            One unit-length vector per window, with the window's times in the audio.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed, pcm16, sample_rate)

    def embed_audio(self, audio: np.ndarray) -> SpeakerEmbeddings:
        """Embed float samples at ``sample_rate`` in the calling thread (see :meth:`embed`)."""
        raise NotImplementedError

    async def warmup(self) -> None:
        """Embed ``warmup_s`` seconds of quiet noise, so that first-call setup is not on a request."""
        samples = round(self.warmup_s * self.sample_rate)
        noise = np.random.default_rng(0).normal(0.0, 0.01, samples).astype(np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_audio, noise)

    def stats(self) -> dict[str, Any]:
        """Calls, windows, seconds of audio embedded and seconds spent embedding."""
        return {
            "calls": self._calls,
            "windows": self._windows,
            "audio_s": round(self._audio_s, 3),
            "busy_s": round(self._busy_s, 3),
        }

    def _embedding_context(self) -> AbstractContextManager[Any]:
        """Entered around each :meth:`embed_audio` of a call (default: nothing)."""
        return nullcontext()

    def _embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        started = time.perf_counter()
        pcm16 = pcm16[: len(pcm16) // 2 * 2]
        audio = pcm16_to_float32(resample_pcm16(pcm16, sample_rate, self.sample_rate))
        with self._embedding_context():
            result = self.embed_audio(audio)
        self._calls += 1
        self._windows += len(result.vectors)
        self._audio_s += len(audio) / self.sample_rate
        self._busy_s += time.perf_counter() - started
        return result

    def _too_short(self, duration_s: float) -> bool:
        """Whether audio this long gets no window at all (shorter than ``min_audio_s`` and a window)."""
        return duration_s < min(self.options.min_audio_s, self.options.window_s)

    @staticmethod
    def _embeddings(
        starts: list[int], window_s: float, duration_s: float, vectors: np.ndarray
    ) -> SpeakerEmbeddings:
        """The windows' vectors with their times: from each start frame to ``window_s`` later or the end."""
        starts_s = [s / FRAMES_PER_S for s in starts]
        return SpeakerEmbeddings(
            starts_s=starts_s,
            ends_s=[min(s + window_s, duration_s) for s in starts_s],
            vectors=vectors.tolist(),
        )
