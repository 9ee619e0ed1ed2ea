"""``VoxrayLLMServer``: Ray Serve's ``LLMServer`` (vLLM) plus one diagnostic method.

Imported only where ``ray[llm]`` is installed (see ``deployments.llm_engines``).
"""

from __future__ import annotations

from typing import Any

from ray.serve.llm.deployment import LLMServer

from deployments import ray_compat


class VoxrayLLMServer(LLMServer):
    """``LLMServer`` with :meth:`engine_stats`, so tests and operators can see that a
    cancelled turn (barge-in) really left the engine, not just the stream."""

    async def engine_stats(self) -> dict[str, Any]:
        """Requests the vLLM engine still holds (``None`` where vLLM's internals differ).

        Reads vLLM's ``AsyncLLM.get_num_unfinished_requests()`` through Ray's engine wrapper,
        a private attribute (``deployments.ray_compat``): this is a diagnostic, and returns
        ``None`` rather than fail.
        """
        return {"unfinished_requests": ray_compat.vllm_unfinished_requests(self)}
