"""What the three model deployments share: building and warming their backend."""

from __future__ import annotations

import logging
import time
from typing import Any

from deployments.registry import backend_class

logger = logging.getLogger("voxray")


async def load_backend(modality: str, config: dict[str, Any]) -> Any:
    """Construct and warm up the backend described by a ``BackendConfig`` dump.

    Args:
        modality: ``asr``, ``llm`` or ``tts``.
        config: ``{"backend": name, "model": spec | None, "options": {...}, ...}``.

    Returns:
        The ready backend instance.
    """
    started = time.perf_counter()
    cls = backend_class(modality, config["backend"])
    backend = cls(config.get("model"), config.get("options") or {})
    await backend.warmup()
    logger.info(
        "%s backend %s (model %s) ready in %.1f s",
        modality.upper(),
        config["backend"],
        config.get("model"),
        time.perf_counter() - started,
    )
    return backend


def backend_stats(backend: Any) -> dict[str, Any]:
    """The backend's counters plus this process's CPU seconds so far.

    Tests read ``process_cpu_s`` twice to check that a cancelled turn stopped costing CPU.
    """
    return {**backend.stats(), "process_cpu_s": time.process_time()}
