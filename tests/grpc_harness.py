"""Test helpers for voxray's gRPC services: channels, stubs and waiting for the ingress.

The stubs come from voxray's own generated modules (``serve_app.protocols.grpc_api.proto``);
the real NVIDIA client library runs in its own venv instead (``tests/riva_clients.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from serve_app.protocols.grpc_api.proto import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


@contextmanager
def channel(target: str) -> Iterator[grpc.Channel]:
    """An insecure channel to ``target`` (``host:port``), closed after the block."""
    with grpc.insecure_channel(target) as opened:
        yield opened


def health(target: str, timeout_s: float = 5.0) -> int:
    """``grpc.health.v1.Health/Check`` of the server at ``target``."""
    with channel(target) as opened:
        stub = health_pb2_grpc.HealthStub(opened)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s).status


def wait_serving(target: str, timeout_s: float = 120.0) -> None:
    """Wait until the gRPC ingress at ``target`` answers health checks with SERVING.

    HAProxy's gRPC backend comes up a little after its HTTP one.
    """
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if health(target) == SERVING:
                return
        except grpc.RpcError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"gRPC at {target} not SERVING within {timeout_s} s: {last}")
