"""Speaker deployment: audio in, speaker embeddings of overlapping windows out. Stateless.

Diarization state (which voice is which speaker) belongs to one live session and lives in
the Ingress (``serve_app.engine.diarization``); this deployment only embeds audio, so any
replica can serve any session.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.common import backend_stats, load_backend
from deployments.types import SpeakerEmbeddings


# A small model (a 1.4M-parameter LSTM on the CPU). No logical CPU by default, so an app
# without a `deployments` block still fits on 2 CPUs as before; the configs give it a share.
@serve.deployment(name="Speaker", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8)
class SpeakerDeployment:
    """Wraps a ``SpeakerBackend`` chosen by config (``speaker.backend``)."""

    async def __init__(self, config: dict[str, Any]) -> None:
        self._backend = await load_backend("speaker", config)

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed overlapping windows of mono PCM16 audio at ``sample_rate``."""
        return await self._backend.embed(pcm16, sample_rate)

    def stats(self) -> dict[str, Any]:
        """The backend's counters and the replica's CPU seconds."""
        return backend_stats(self._backend)
