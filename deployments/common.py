"""What the three model deployments share: building and warming their backend."""

from __future__ import annotations

import logging
import time
from typing import Any

from deployments.logs import attach_to_serve_logs
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
    attach_to_serve_logs()
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


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``Class: first line`` of an error: short enough for a client, a log line or stats.

    A model's exception that crossed a Ray call arrives as ``RayTaskError``, whose text is
    the remote traceback (file paths, code); its cause's own message is what is summarised.
    """
    from ray.exceptions import RayTaskError

    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    text = str(cause).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
