"""LLM deployment: chat messages in, a stream of text deltas out. Stateless.

When the Ingress cancels a turn (barge-in), Serve cancels this generator's task in the
replica; closing the backend's generator aborts the generation so it stops using CPU/GPU.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.common import backend_stats, load_backend
from deployments.types import ChatMessage, SamplingParams


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class LLMDeployment:
    """Wraps an ``LLMBackend`` chosen by config (``llm.backend``)."""

    async def __init__(self, config: dict[str, Any], engines: dict[str, Any] | None = None) -> None:
        """Build the backend.

        Args:
            config: An ``LLMConfig`` dump.
            engines: Handles of the app's vLLM engine deployments by ``model_id``; bound here so
                Serve deploys them, and named in ``stats``. Backends find them by name.
        """
        self._engines = dict(engines or {})
        self._backend = await load_backend("llm", config)

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the reply's text deltas; call with ``handle.options(stream=True)``."""
        stream = self._backend.chat(messages, params)
        try:
            async for delta in stream:
                yield delta
        finally:
            await stream.aclose()

    def stats(self) -> dict[str, Any]:
        """The backend's counters and the replica's CPU seconds (for cancellation checks)."""
        return {**backend_stats(self._backend), "engines": sorted(self._engines)}
