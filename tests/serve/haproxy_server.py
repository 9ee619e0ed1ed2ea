"""A voxray server as production runs it: ``serve run`` in HAProxy mode, in its own process.

The in-process ``serve_instance`` fixture uses Serve's default Python proxy, which reads
whatever a replica sends and holds it for the client without bound; what voxray does
about a client that stops reading can only be seen behind HAProxy, where back-pressure
reaches the Ingress. This starts ``serve run`` with the same environment as
``scripts/run.sh``, on free ports, as its own Ray cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from serve_app.protocols.grpc_api import SERVICER_FUNCTIONS
from serve_app.server.serve_env import SERVE_ENVIRONMENT
from tests.processes import descendants, marked_processes, stop_processes

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_rss_mb(marker: str, title: str) -> float | None:
    """RSS of the process titled ``title...`` whose environment holds ``marker``.

    Ray starts its workers in new sessions, so they are not found through the process
    tree; they inherit the environment, though, and the marker is unique to one server.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if not Path(f"/proc/{entry}/cmdline").read_text().startswith(title):
                continue
            if marker.encode() not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    return None


_WINDOW = 400  # replica ports of one cluster: HTTP in the first half, gRPC in the second
_TAKEN_WINDOWS: set[int] = set()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def replica_port_window() -> int:
    """The first port of a window of replica ports no other cluster of this run uses.

    Serve hands replica ports out of its window without checking that they are free, and
    gRPC servers bind with SO_REUSEPORT: two clusters given the same window would share a
    port, and the kernel would split calls between their replicas. So every cluster of a
    run gets a window of its own, and one whose ports are all free now (another test run
    on the machine may hold some).
    """
    candidates = [base for base in range(20_000, 29_000, _WINDOW) if base not in _TAKEN_WINDOWS]
    random.shuffle(candidates)
    for base in candidates:
        if all(_port_free(port) for port in range(base, base + _WINDOW)):
            _TAKEN_WINDOWS.add(base)
            return base
    raise RuntimeError("no free window of replica ports between 20000 and 29000")


def haproxy_environment(stats_port: int) -> tuple[dict[str, str], str]:
    """This process's environment plus Serve's as ``scripts/run.sh`` sets it (HAProxy mode).

    Everything HAProxy mode opens gets a free port, so the cluster runs beside others.
    Also returns a ``NAME=value`` marker set in the environment, unique to this cluster,
    by which its processes are found (``process_rss_mb``, ``stop_process_group``).
    """
    http_base = replica_port_window()
    marker = f"VOXRAY_TEST_SERVER={uuid.uuid4().hex}"
    env = {
        **os.environ,
        **SERVE_ENVIRONMENT,
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        # Replica ports: a random window below Linux's ephemeral range, away from the defaults.
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_base + 200),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(http_base + 200),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(http_base + 400),
        marker.split("=")[0]: marker.split("=")[1],
    }
    env.pop("RAY_ADDRESS", None)
    return env, marker


def haproxy_servers(stats_port: int) -> list[dict[str, str]]:
    """HAProxy's stats page as rows (``pxname``, ``svname``, ``status``, ``scur``...)."""
    url = f"http://127.0.0.1:{stats_port}/stats;csv"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]


def ingress_servers_up(stats_port: int) -> list[dict[str, str]]:
    """The Ingress replicas HAProxy routes to directly (not its backup, Serve's Python proxy)."""
    return [
        row
        for row in haproxy_servers(stats_port)
        if row["svname"].startswith("SERVE_REPLICA_voxray-Ingress") and row["status"].startswith("UP")
    ]


def stop_process_group(
    process: subprocess.Popen[bytes], sig: int, marker: str | None = None, grace_s: float = 10.0
) -> None:
    """Stop ``process`` and every process it started, also those outside its process group.

    Sends ``sig``, waits up to a minute (then kills it), and kills whatever of its process
    group is left. Ray starts its daemons and workers in sessions of their own, and Serve's
    HAProxy runs in its manager actor's worker's: killing the group misses them, and once
    their parent is killed they are re-parented to init, out of reach of the tree. So the
    tree under ``process`` is taken before the signal, and the processes whose environment
    holds ``marker`` (which they all inherit) are looked up after it; those of both still
    running ``grace_s`` after ``process`` exited get SIGTERM, then SIGKILL.

    Args:
        process: The process started with ``start_new_session=True``.
        sig: The signal that asks it to stop (it shuts its cluster down on it).
        marker: ``NAME=value`` in the environment of everything it started, if any.
        grace_s: How long its processes may take to exit after it did.
    """
    started = descendants(process.pid)  # while they are still its descendants
    process.send_signal(sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    stop_processes([*started, *(marked_processes(marker) if marker else [])], grace_s=grace_s)


class HAProxyServer:
    """A running ``serve run``: its URL, process and health."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, stats_port: int, log: Path, marker: str
    ) -> None:
        self.process = process
        self.stats_port = stats_port
        self.marker = marker
        self.port = port
        self.log = log
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        self.grpc_target = ""  # host:port of Serve's gRPC ingress, set once it is configured

    def healthz(self) -> dict[str, Any]:
        """The Ingress's ``/healthz``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as response:
            return json.loads(response.read())

    def ingress_routed_directly(self) -> bool:
        """Whether HAProxy sends connections to the Ingress replica itself.

        Until its health checks pass, HAProxy uses its backup server, Serve's Python proxy,
        which would hide the back-pressure under test.
        """
        return bool(ingress_servers_up(self.stats_port))

    def ingress_rss_mb(self) -> float | None:
        """RSS of the Ingress replica process."""
        return process_rss_mb(self.marker, "ray::ServeReplica:voxray:Ingress")


@contextmanager
def haproxy_server(args: dict[str, Any], workdir: Path, timeout_s: float = 300) -> Iterator[HAProxyServer]:
    """Run the voxray app with ``args`` behind HAProxy until the block ends."""
    port = free_port()
    grpc_port = free_port()
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": port},
        "grpc_options": {"port": grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS)},
        "applications": [
            {"name": "voxray", "route_prefix": "/", "import_path": "serve_app.app:build_app", "args": args}
        ],
    }
    stats_port = free_port()
    config_path = workdir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env, marker = haproxy_environment(stats_port)
    log = workdir / "serve.log"
    serve_cli = Path(sys.executable).with_name("serve")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(serve_cli), "run", str(config_path)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    server = HAProxyServer(process, port, stats_port, log, marker)
    server.grpc_target = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve run exited ({process.returncode}): {log.read_text()[-3000:]}")
            try:
                if server.healthz().get("status") == "ok" and server.ingress_routed_directly():
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not up in {timeout_s} s: {log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield server
    finally:
        # serve run shuts its cluster down on Ctrl-C (but may leave HAProxy running)
        stop_process_group(process, signal.SIGINT, marker)
