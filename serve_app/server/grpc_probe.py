"""A gRPC health probe for Kubernetes exec probes: ``grpc.health.v1.Health/Check``, one call.

    python -m serve_app.server.grpc_probe --port 50051   # exit 0 only if the answer is SERVING

The worker pods' readinessProbe (``kuberay/render.py``) runs this next to KubeRay's raylet
and proxy checks and voxray's ``/readyz``: it calls the gRPC port the serve Service exposes,
through the node's HAProxy, which hands the call to an Ingress replica. The Ingress answers
SERVING, or NOT_SERVING while its replica drains; a refused connection, a status other than
OK (before the app is deployed, Serve's HAProxy answers NOT_FOUND) or no answer within ``--timeout``
also fail the probe. Health needs no API key.

Imports only grpcio and the generated health stubs, so the probe starts in a fraction of a
second (no Ray, no models).
"""

from __future__ import annotations

import argparse
import sys

import grpc

from serve_app.protocols.grpc_api import DEFAULT_GRPC_PORT
from serve_app.protocols.grpc_api.proto import health_pb2, health_pb2_grpc

DEFAULT_TIMEOUT_S = 3.0


def check(target: str, service: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Ask ``target`` for its health once.

    Args:
        target: ``host:port`` of the gRPC server (plaintext).
        service: The ``service`` field of the request (``""``: the whole server).
        timeout_s: Deadline of the call, connecting included.

    Returns:
        The serving status's name: ``SERVING``, ``NOT_SERVING``, ``UNKNOWN``, or for a value
        this proto does not name (the standard one adds ``SERVICE_UNKNOWN``), its number.

    Raises:
        grpc.RpcError: The call failed (unreachable, deadline exceeded, any non-OK status).
    """
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    return statuses.Name(reply.status) if reply.status in statuses.values() else f"status {reply.status}"


def main(argv: list[str] | None = None) -> int:
    """Probe once and report: the status on stdout, or why it failed on stderr.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when the server answered SERVING, else 1.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost", help="the server's host (default: localhost)")
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="its gRPC port (default: 50051)")
    parser.add_argument("--service", default="", help='the service to ask about (default: "", the server)')
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer (default: 3)"
    )
    args = parser.parse_args(argv)
    target = f"{args.host}:{args.port}"
    try:
        status = check(target, args.service, args.timeout)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"{target}: {code.name if code else 'error'}: {details}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"{target}: {status}", file=sys.stderr)
        return 1
    print(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
