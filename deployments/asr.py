"""ASR deployment: one finished utterance in, one transcript out. Stateless."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.common import backend_stats, load_backend
from deployments.types import Transcript


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class ASRDeployment:
    """Wraps an ``ASRBackend`` chosen by config (``asr.backend``)."""

    async def __init__(self, config: dict[str, Any]) -> None:
        self._backend = await load_backend("asr", config)

    async def transcribe(self, pcm16: bytes, sample_rate: int, language: str | None) -> Transcript:
        """Transcribe mono PCM16 audio at ``sample_rate``."""
        return await self._backend.transcribe(pcm16, sample_rate, language)

    def stats(self) -> dict[str, Any]:
        """The backend's counters and the replica's CPU seconds (for cancellation checks)."""
        return backend_stats(self._backend)
