"""ASR deployment: one finished utterance in, one transcript out. Stateless.

A backend that can transcribe a batch (:class:`BatchASRBackend`, e.g. NeMo on a GPU) gets
concurrent calls grouped with Ray Serve's ``@serve.batch``: utterances from many sessions
arriving within ``batch_wait_timeout_s`` of each other share one model call. Other backends
are called once per utterance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ray import serve

from deployments.common import backend_stats, load_backend
from deployments.types import DecodeOptions, Transcript


@runtime_checkable
class BatchASRBackend(Protocol):
    """An ASR backend that transcribes several utterances in one model call."""

    max_batch_size: int
    batch_wait_timeout_s: float

    async def transcribe_batch(self, items: Sequence[tuple[bytes, int, str | None]]) -> list[Transcript]:
        """Transcribe ``(pcm16, sample_rate, language)`` items; one transcript each, in order."""
        ...


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class ASRDeployment:
    """Wraps an ``ASRBackend`` chosen by config (``asr.backend``)."""

    async def __init__(self, config: dict[str, Any]) -> None:
        self._backend = await load_backend("asr", config)
        self._batched: Callable[[bytes, int, str | None], Awaitable[Transcript]] | None = None
        if isinstance(self._backend, BatchASRBackend):
            # Decorated per instance (not on the class) so that the batch settings come from
            # this replica's backend options.
            self._batched = serve.batch(
                max_batch_size=self._backend.max_batch_size,
                batch_wait_timeout_s=self._backend.batch_wait_timeout_s,
            )(self._transcribe_batch)

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Transcribe mono PCM16 audio at ``sample_rate``.

        ``options`` (word times, draft decoding for live partials) go to a backend that
        transcribes one request at a time. A batching backend ignores them: its transcripts
        carry no word times and the live engine spreads the words over the audio; its decodes
        are batched across every stream's partials and finals alike.
        """
        if self._batched is not None:
            # Always positional: @serve.batch groups calls by the shape of their arguments.
            return await self._batched(pcm16, sample_rate, language)
        return await self._backend.transcribe(pcm16, sample_rate, language, options)

    async def _transcribe_batch(
        self, pcm16s: list[bytes], sample_rates: list[int], languages: list[str | None]
    ) -> list[Transcript]:
        """One batch from ``@serve.batch``: each argument is a list, one entry per call."""
        return await self._backend.transcribe_batch(list(zip(pcm16s, sample_rates, languages, strict=True)))

    def stats(self) -> dict[str, Any]:
        """The backend's counters and the replica's CPU seconds (for cancellation checks)."""
        return backend_stats(self._backend)
