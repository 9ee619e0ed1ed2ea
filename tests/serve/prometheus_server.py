"""A real Prometheus server (Debian's ``prometheus`` package) on loopback, for tests.

``scripts/test.sh`` installs the package when it is missing; run by hand without it, the
tests that need it fail and say how to install it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.serve.haproxy_server import free_port, stop_process_group


class Prometheus:
    """Queries one running Prometheus over its HTTP API.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:9090``.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} failed: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant vector result of ``promql``: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        return list(self._get("/api/v1/query", query=promql)["result"])

    def value(self, promql: str) -> float | None:
        """The single value ``promql`` gives (e.g. a ``sum``), or ``None`` when it is empty."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def names(self) -> set[str]:
        """Every metric name Prometheus has scraped."""
        return set(self._get("/api/v1/label/__name__/values"))

    def targets_up(self) -> bool:
        """Whether every scrape target's last scrape succeeded."""
        active = self._get("/api/v1/targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def wait_for(
        self, promql: str, check: Any = lambda v: v is not None and v > 0, timeout_s: float = 60
    ) -> float:
        """Poll ``promql`` until ``check(value)`` holds; returns that value.

        Ray exports a worker's metrics every few seconds and Prometheus scrapes every
        second, so a series appears some seconds after it was recorded.

        Raises:
            AssertionError: It did not hold within ``timeout_s`` (the message has the last value).
        """
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.value(promql)
            if check(value):
                return value  # type: ignore[no-any-return]
            time.sleep(1)
        raise AssertionError(f"{promql} = {value} after {timeout_s} s")


@contextmanager
def prometheus_scraping(target: str, workdir: Path) -> Iterator[Prometheus]:
    """Run Prometheus scraping ``target`` (``host:port``) every second, until the block exits.

    Raises:
        RuntimeError: ``prometheus`` is not installed, or did not become ready.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError(
            "the prometheus binary is not installed: `apt-get install prometheus` "
            "(scripts/test.sh installs it when it runs as root)"
        )
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield Prometheus(url)
    finally:
        stop_process_group(process, signal.SIGTERM)
        log.close()
