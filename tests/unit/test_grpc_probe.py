"""The gRPC health probe the worker pods' readinessProbe runs (serve_app/server/grpc_probe.py),
against an in-process gRPC server implementing ``grpc.health.v1.Health`` with voxray's stubs."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from serve_app.protocols.grpc_api.proto import health_pb2, health_pb2_grpc
from serve_app.server import grpc_probe

ROOT = Path(__file__).resolve().parents[2]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Health(health_pb2_grpc.HealthServicer):
    """Answers ``status``, or aborts with ``abort``, after ``delay_s``; records what was asked."""

    status: int = SERVING
    abort: grpc.StatusCode | None = None
    delay_s: float = 0.0
    asked: list[str] = field(default_factory=list)

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.asked.append(request.service)
        await asyncio.sleep(self.delay_s)
        if self.abort is not None:
            await context.abort(self.abort, "Application metadata not set.")
        return health_pb2.HealthCheckResponse(status=self.status)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Health, int]]:
    health = Health()
    srv = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield health, port
    finally:
        await srv.stop(grace=None)


async def probe(port: int, *extra: str) -> int:
    """Run the probe's ``main`` off the event loop (its client is blocking; the server is not)."""
    return await asyncio.to_thread(grpc_probe.main, ["--host", "127.0.0.1", "--port", str(port), *extra])


async def test_serving_passes(server: tuple[Health, int], capsys: pytest.CaptureFixture[str]) -> None:
    health, port = server
    assert await probe(port) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert health.asked == [""]  # the whole server, as kubelet's own gRPC probe asks


async def test_not_serving_fails(server: tuple[Health, int], capsys: pytest.CaptureFixture[str]) -> None:
    health, port = server
    health.status = NOT_SERVING  # a draining replica
    assert await probe(port) == 1
    assert capsys.readouterr().err == f"127.0.0.1:{port}: NOT_SERVING\n"
    health.status = health_pb2.HealthCheckResponse.UNKNOWN
    assert await probe(port) == 1
    health.status = 3  # SERVICE_UNKNOWN in the standard proto, unnamed in voxray's copy
    assert await probe(port) == 1
    assert capsys.readouterr().err.endswith(": status 3\n")


async def test_an_error_status_fails(server: tuple[Health, int], capsys: pytest.CaptureFixture[str]) -> None:
    health, port = server
    health.abort = grpc.StatusCode.NOT_FOUND  # what Serve answers before the app is deployed
    assert await probe(port) == 1
    assert capsys.readouterr().err == f"127.0.0.1:{port}: NOT_FOUND: Application metadata not set.\n"


async def test_no_answer_in_time_fails_at_the_timeout(
    server: tuple[Health, int], capsys: pytest.CaptureFixture[str]
) -> None:
    health, port = server
    health.delay_s = 5
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await probe(port, "--timeout", "0.3") == 1
    assert loop.time() - start < 3
    assert ": DEADLINE_EXCEEDED: " in capsys.readouterr().err


async def test_nothing_listening_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await probe(port) == 1
    assert f"127.0.0.1:{port}: UNAVAILABLE: " in capsys.readouterr().err


async def test_the_service_name_is_sent(server: tuple[Health, int]) -> None:
    health, port = server
    assert await probe(port, "--service", "voxray.voice.v1.VoxrayVoice") == 0
    assert health.asked == ["voxray.voice.v1.VoxrayVoice"]


def test_defaults_are_voxray_s_port_on_this_host_and_a_short_deadline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    monkeypatch.setattr(grpc_probe, "check", lambda *args: calls.append(args) or "SERVING")
    assert grpc_probe.main([]) == 0
    assert calls == [("localhost:50051", "", 3.0)]


async def test_runs_as_the_probe_command_runs_it(server: tuple[Health, int]) -> None:
    """``python -m serve_app.server.grpc_probe``, in a process of its own, as kubelet runs it."""
    health, port = server
    for status, code in ((SERVING, 0), (NOT_SERVING, 1)):
        health.status = status
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "serve_app.server.grpc_probe",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == code
