"""A Ray head node run the way KubeRay runs one, and Serve configs applied the way it does.

KubeRay starts the head container with ``ray start --head --block`` and applies a
RayService's ``serveConfigV2`` by PUTting it to the dashboard's
``/api/serve/applications/``; an update of ``serveConfigV2`` is another PUT to the same
cluster. This does both on loopback, in HAProxy mode as voxray's manifests set it, so that
redeploys and scale-downs are exercised through the same path as in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.serve.haproxy_server import (
    ROOT,
    free_port,
    haproxy_environment,
    haproxy_servers,
    stop_process_group,
)


class RayServiceHead:
    """A running head node: its dashboard (where configs go) and Serve's HTTP port."""

    def __init__(
        self, process: subprocess.Popen[bytes], dashboard_port: int, stats_port: int, log: Path, token: str
    ) -> None:
        self.process = process
        self._token = token
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.stats_port = stats_port
        self.log = log
        self.http_port = free_port()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.dashboard + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text.strip() else None

    def apply(self, applications: list[dict[str, Any]]) -> None:
        """Apply a Serve config as KubeRay applies ``serveConfigV2`` (returns at once)."""
        config = {
            "proxy_location": "EveryNode",
            "http_options": {"host": "127.0.0.1", "port": self.http_port},
            "applications": applications,
        }
        self._request("PUT", "/api/serve/applications/", config)

    def application(self, name: str) -> dict[str, Any] | None:
        """The application's details (status, deployments, replicas), as KubeRay polls them."""
        details = self._request("GET", "/api/serve/applications/")
        return (details.get("applications") or {}).get(name)

    def replica_states(self, app: str, deployment: str) -> list[str]:
        """The states (``RUNNING``, ``STOPPING``...) of the deployment's replicas."""
        details = self.application(app) or {}
        replicas = details.get("deployments", {}).get(deployment, {}).get("replicas", [])
        return sorted(r["state"] for r in replicas)

    def wait_running(self, app: str, timeout_s: float = 300) -> dict[str, Any]:
        """Wait until ``app`` is RUNNING; its details."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {self.log.read_text()[-3000:]}")
            details = self.application(app)
            status = details and details.get("status")
            if status == "RUNNING":
                return details  # type: ignore[return-value]
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"{app} failed to deploy: {details.get('message')}")  # type: ignore[union-attr]
            time.sleep(1)
        raise TimeoutError(f"{app} not RUNNING within {timeout_s} s")

    def ingress_sessions(self) -> dict[str, int]:
        """Open connections per Ingress replica, as HAProxy counts them (its ``scur``)."""
        return {
            row["svname"]: int(row["scur"] or 0)
            for row in haproxy_servers(self.stats_port)
            if row["svname"].startswith("SERVE_REPLICA_voxray-Ingress")
        }

    def url(self, path: str = "/v1/realtime") -> str:
        """A WebSocket URL on Serve's HTTP port (HAProxy)."""
        return f"ws://127.0.0.1:{self.http_port}{path}"


@contextmanager
def rayservice_head(workdir: Path, num_cpus: int = 4, timeout_s: float = 120) -> Iterator[RayServiceHead]:
    """Start a head node as KubeRay does (``ray start --head --block``) until the block ends."""
    stats_port = free_port()
    env, marker = haproxy_environment(stats_port)
    # Token authentication, as KubeRay's authOptions (mode: token) sets it up: the dashboard
    # refuses requests without the cluster's token.
    token = secrets.token_hex(32)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    dashboard_port = free_port()
    ports = {
        "port": free_port(),
        "dashboard-port": dashboard_port,
        "ray-client-server-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
    }
    # Its own temp dir: `ray start` records its address in the temp dir, and every later
    # ray.init() or `serve run` without an address on this machine would join this cluster.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: socket paths
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    log = workdir / "ray-head.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    head = RayServiceHead(process, dashboard_port, stats_port, log, token)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited ({process.returncode}): {log.read_text()[-3000:]}")
            try:
                head.application("none")  # the dashboard answers Serve's REST API
                break
            except urllib.error.HTTPError:
                raise  # up, but refusing: a wrong token or API, not a slow start
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dashboard not up in {timeout_s} s: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield head
    finally:
        with contextlib.suppress(Exception):  # Serve stops its HAProxy with it
            head._request("DELETE", "/api/serve/applications/")
            deadline = time.monotonic() + 60
            while head.application("voxray") is not None and time.monotonic() < deadline:
                time.sleep(1)
        # `ray start --block` stops its node on SIGTERM; the marker finds what it leaves.
        stop_process_group(process, signal.SIGTERM, marker)
        shutil.rmtree(temp_dir, ignore_errors=True)
