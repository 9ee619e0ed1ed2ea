"""TTS deployment: one phrase in, a stream of audio chunks out. Stateless."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.common import backend_stats, load_backend
from deployments.types import AudioChunk


@serve.deployment(name="TTS", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class TTSDeployment:
    """Wraps a ``TTSBackend`` chosen by config (``tts.backend``)."""

    async def __init__(self, config: dict[str, Any]) -> None:
        self._backend = await load_backend("tts", config)

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream audio for one phrase; call with ``handle.options(stream=True)``."""
        stream = self._backend.synthesize(text, voice)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    def stats(self) -> dict[str, Any]:
        """The backend's counters and the replica's CPU seconds (for cancellation checks)."""
        return backend_stats(self._backend)
