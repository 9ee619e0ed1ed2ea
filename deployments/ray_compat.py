"""Every use of Ray's private internals, in one place, checked against the installed Ray.

Ray Serve has no public hooks for a few things voxray needs: the start of a replica's
graceful shutdown (to keep live sessions through a drain), the HTTP host Serve binds to (to
refuse serving keyless on a public address), and the vLLM engine's request count behind Ray's
``LLMServer`` (a diagnostic). Each is read here, and :data:`PRIVATE_NAMES` lists every private
name used, so ``tests/unit/test_ray_compat.py`` checks them against the installed Ray and an
upgrade that renames one fails in CI instead of silently degrading. Callers treat failures as
"not available" and fall back.

Both ``serve_app`` (the Ingress) and ``deployments`` (the vLLM server) use this, so it lives
in ``deployments``, which ``serve_app`` already imports and never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrivateName:
    """One private name voxray relies on.

    Attributes:
        module: The module that defines it (imported, or read as source when importing it
            needs an engine that may be absent).
        name: ``attr`` for a module attribute, or ``self.attr`` / ``def attr`` for an
            instance attribute or method that must appear in the module's source.
        why: What voxray uses it for.
    """

    module: str
    name: str
    why: str


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName("ray._private.worker", "global_worker", "find this process's actor (the replica)"),
    PrivateName("ray._private.worker", "self.actors", "the actor instances of this worker process"),
    PrivateName("ray.serve._private.replica", "self._replica_impl", "the replica behind the actor"),
    PrivateName("ray.serve._private.replica", "self._shutting_down", "a drain has begun"),
    PrivateName("ray.serve._private.replica", "self._deployment_config", "graceful_shutdown_timeout_s"),
    PrivateName(
        "ray.serve._private.replica",
        "def _stop_accepting_direct_ingress",
        "keep live sessions through a drain",
    ),
    PrivateName("ray.serve._private.replica", "self._direct_ingress_http_server", "its listening sockets"),
    PrivateName("ray.serve._private.constants", "SERVE_CONTROLLER_NAME", "find Serve's controller"),
    PrivateName("ray.serve._private.constants", "SERVE_NAMESPACE", "find Serve's controller"),
    PrivateName("ray.serve._private.controller", "def get_http_config", "the host Serve listens on"),
    PrivateName("ray.llm._internal.serve.core.server.llm_server", "self.engine", "LLMServer's engine"),
    PrivateName(
        "ray.llm._internal.serve.engines.vllm.vllm_engine", "self._engine_client", "vLLM's AsyncLLM client"
    ),
)


def current_replica() -> Any:
    """Serve's replica implementation running in this process (the calling deployment's).

    Raises:
        LookupError: Not inside a Serve replica (or Ray's internals changed).
    """
    import ray

    if not ray.is_initialized():  # get_runtime_context() would start a whole local cluster
        raise LookupError("Ray is not initialized in this process")
    worker = ray._private.worker.global_worker
    actor_id = ray.get_runtime_context().get_actor_id()
    by_hex = {(k.hex() if hasattr(k, "hex") else k): a for k, a in worker.actors.items()}
    replica = getattr(by_hex.get(actor_id), "_replica_impl", None)
    if replica is None or not hasattr(replica, "_shutting_down"):
        raise LookupError("no Serve replica in this process")
    return replica


def replica_shutting_down(replica: Any) -> bool:
    """Whether Serve has begun to shut ``replica`` down (a drain)."""
    return bool(replica._shutting_down)


def replica_graceful_shutdown_s(replica: Any) -> float:
    """The replica's ``graceful_shutdown_timeout_s``."""
    return float(replica._deployment_config.graceful_shutdown_timeout_s)


def replace_stop_accepting(replica: Any, stop: Callable[[], None]) -> bool:
    """Make Serve call ``stop`` where it would shut the replica's HTTP server down in a drain.

    Returns:
        False when this Ray has no such step (then nothing was changed).
    """
    if not hasattr(replica, "_stop_accepting_direct_ingress"):
        return False
    replica._stop_accepting_direct_ingress = stop
    return True


def direct_ingress_listeners(replica: Any) -> list[Any]:
    """The listening servers of the replica's own HTTP server (HAProxy mode), if any."""
    server = getattr(replica, "_direct_ingress_http_server", None)
    return list(getattr(server, "servers", None) or [])


def serve_http_host(timeout_s: float = 10) -> str:
    """The host Serve's HTTP proxy binds to, from Serve's controller."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    return str(ray.get(controller.get_http_config.remote(), timeout=timeout_s).host)


def vllm_unfinished_requests(llm_server: Any) -> int | None:
    """Requests vLLM still holds behind Ray's ``LLMServer``; ``None`` where it cannot be read."""
    client = getattr(getattr(llm_server, "engine", None), "_engine_client", None)
    count = getattr(client, "get_num_unfinished_requests", None)
    return int(count()) if callable(count) else None
