"""Finding a running voxray server's processes and reading their memory and CPU from /proc (Linux).

The soak benchmark must watch the Ray cluster that serves *its* URL. ``ray.init(address="auto")``
would attach to whichever cluster a machine recorded last, and ``serve run`` clusters are not
recorded at all, so on a machine where several are running (tests, other servers) the Ray state
API can silently watch the wrong one. Instead :func:`find_server_root` starts from the process
listening on the URL's port (HAProxy, or Serve's proxy actor) and climbs to the driver that
started its raylet; every process under it belongs to the same cluster. psutil is not a
dependency of voxray, so /proc is read directly.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.soak_report import ProcPoint

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Ray sets worker titles to "ray::<actor class>" and appends ".<method>" while a method runs.
_RAY_TITLE = re.compile(r"^ray::(?:ServeReplica:[^:\s]+:)?([A-Za-z_][\w-]*)")
# Ray's own idle or bookkeeping processes: not part of the serving path.
_IGNORED = {"IDLE", "DashboardAgent", "RuntimeEnvAgent"}


@dataclass(frozen=True)
class ProcInfo:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    argv: tuple[str, ...]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def process_table() -> dict[int, ProcInfo]:
    """Every process: pid, parent and command line."""
    table = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat, cmdline = _read(entry / "stat"), _read(entry / "cmdline")
        if stat is None or cmdline is None:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may contain spaces
        table[int(entry.name)] = ProcInfo(int(entry.name), ppid, tuple(a for a in cmdline.split("\0") if a))
    return table


def classify(argv: tuple[str, ...]) -> str | None:
    """The label a process is reported under, or ``None`` for processes the soak does not watch.

    ``ray::ServeReplica:voxray:Ingress.handle_request`` -> ``Ingress``; ``ray::ServeController`` ->
    ``ServeController``; the HAProxy binary -> ``haproxy``; also ``raylet``, ``gcs_server`` and the
    ``serve run`` driver.
    """
    if not argv:
        return None
    first = argv[0]
    if (match := _RAY_TITLE.match(first)) is not None:
        name = match.group(1)
        return None if name in _IGNORED else name
    base = os.path.basename(first.split()[0])
    if base in ("haproxy", "raylet", "gcs_server"):
        return base
    if len(argv) >= 3 and os.path.basename(argv[1]) == "serve" and argv[2] == "run":
        return "serve run"
    return None


def listening_pids(port: int) -> set[int]:
    """Pids holding a listening TCP socket on ``port`` (any address)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        text = _read(PROC / "net" / name) or ""
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return set()
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.add(int(entry.name))
                    break
        except OSError:
            continue
    return pids


def find_server_root(port: int, table: dict[int, ProcInfo] | None = None) -> int | None:
    """The top of the process tree that serves ``port``: the driver that started its raylet.

    Falls back to the raylet itself when its parent is gone (a ``ray start`` cluster), and to the
    listener when it is not under a raylet at all.
    """
    table = process_table() if table is None else table
    for pid in sorted(listening_pids(port)):
        node = table.get(pid)
        while node is not None and node.ppid > 1:
            if node.argv and os.path.basename(node.argv[0].split()[0]) == "raylet":
                return node.ppid if node.ppid in table else node.pid
            node = table.get(node.ppid)
        return pid
    return None


def descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in table and pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def _memory_kb(pid: int) -> tuple[int, int] | None:
    text = _read(PROC / str(pid) / "status")
    if text is None:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["VmRSS"].split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])
    except (KeyError, ValueError):
        return None


def _cpu_ticks(pid: int) -> int | None:
    text = _read(PROC / str(pid) / "stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


class ProcSampler:
    """Samples RSS and CPU of the watched processes under one root, summed per label.

    The tree is listed again at every sample, so restarted replicas and reloaded HAProxy
    processes are followed (their pids are kept in each :class:`ProcPoint`).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._ticks: dict[int, tuple[float, int]] = {}  # pid -> (wall time, CPU ticks) last seen

    def sample(self, now: float) -> dict[str, ProcPoint]:
        """Each watched label's processes at wall-clock time ``now`` (``time.monotonic()``)."""
        table = process_table()
        points: dict[str, ProcPoint] = {}
        for pid in sorted(descendants(self.root, table)):
            label = classify(table[pid].argv)
            memory, ticks = _memory_kb(pid), _cpu_ticks(pid)
            if label is None or memory is None or ticks is None:
                continue
            cpu = None
            if (previous := self._ticks.get(pid)) is not None and now > previous[0]:
                cpu = 100 * (ticks - previous[1]) / CLOCK_TICKS / (now - previous[0])
            self._ticks[pid] = (now, ticks)
            point = points.setdefault(label, ProcPoint(pids=[], rss_mb=0.0, anon_mb=0.0))
            point.pids.append(pid)
            point.rss_mb = round(point.rss_mb + memory[0] / 1024, 1)
            point.anon_mb = round(point.anon_mb + memory[1] / 1024, 1)
            if cpu is not None:
                point.cpu_pct = round((point.cpu_pct or 0.0) + cpu, 1)
        return points


def healthz_sessions(url: str, timeout_s: float = 3.0) -> int | None:
    """Live sessions from the Ingress's ``/healthz``; ``None`` when it cannot be read."""
    # No proxy: a local voice server is never behind the environment's HTTP proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            sessions = json.loads(response.read()).get("sessions")
    except (OSError, ValueError):
        return None
    return sessions if isinstance(sessions, int) else None
