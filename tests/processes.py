"""The processes a test run starts, found through ``/proc`` and stopped, so none outlives it.

Killing a process group is not enough to stop a Ray cluster: Ray starts its daemons and
workers, and Serve its HAProxy, in sessions of their own, and a process whose parent dies
is re-parented to init, out of the tree it came from. Two things tie a process to the code
that started it anyway: its ancestry, while its parents live, and its environment, which
it inherits from them and keeps after they die. Tests therefore put a unique ``NAME=value``
marker in the environment of whatever they start (``tests/conftest.py`` one for the whole
run, ``tests/serve/haproxy_server.py`` one per cluster) and look for it in
``/proc/<pid>/environ``. Linux only, like the servers the tests start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Python's helpers that a process starts for itself and that exit with it: bound to the
# pytest process's own lifetime, never leaked by a test.
_HELPERS_OF_THEIR_PARENT = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc`` shows it.

    Attributes:
        pid: Its process id.
        ppid: Its parent's process id (1, or a subreaper's, once its parent died).
        start_ticks: When it started, in clock ticks after boot: with ``pid``, it names
            the process even after its pid is reused.
        state: One letter: ``R``, ``S``, ``D``, ``Z`` (a zombie: dead, not yet reaped)...
        name: Its command name (``comm``, at most 15 characters).
        cmdline: Its command line, arguments joined by spaces.
    """

    pid: int
    ppid: int
    start_ticks: int
    state: str
    name: str
    cmdline: str

    @property
    def key(self) -> tuple[int, int]:
        """``(pid, start_ticks)``: unique across pid reuse."""
        return (self.pid, self.start_ticks)

    def __str__(self) -> str:
        command = self.cmdline or f"[{self.name}]"
        return f"{self.pid} {command[:160]}"


def read_process(pid: int) -> ProcessInfo | None:
    """The process ``pid``, or ``None`` when there is none (or it just exited).

    Args:
        pid: A process id.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may itself hold spaces and parentheses.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(
        pid=pid,
        ppid=int(fields[1]),
        start_ticks=int(fields[19]),
        state=fields[0],
        name=name,
        cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace").strip(),
    )


def list_processes() -> dict[int, ProcessInfo]:
    """Every process on the machine (of this PID namespace), by pid."""
    processes = {}
    for entry in os.listdir(PROC):
        if entry.isdigit() and (info := read_process(int(entry))) is not None:
            processes[info.pid] = info
    return processes


def has_environment_entry(pid: int, entry: str) -> bool:
    """Whether process ``pid`` was started with ``entry`` (``NAME=value``) in its environment.

    This is the environment it was started with: a process's later changes to its own
    environment do not show.

    Args:
        pid: A process id.
        entry: ``NAME=value``, compared exactly.
    """
    try:
        return entry.encode() in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def environment_value(pid: int, name: str) -> str | None:
    """The value of ``name`` in the environment process ``pid`` was started with, if set.

    Args:
        pid: A process id.
        name: A variable name, e.g. ``PYTEST_CURRENT_TEST`` (which names the test, and its
            phase, during which a process of a test run was started).
    """
    try:
        entries = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = f"{name}=".encode()
    return next((e[len(prefix) :].decode(errors="replace") for e in entries if e.startswith(prefix)), None)


def descendants(root: int, processes: dict[int, ProcessInfo] | None = None) -> list[ProcessInfo]:
    """The children of ``root``, their children and so on (not ``root`` itself).

    Args:
        root: A process id.
        processes: A snapshot from :func:`list_processes`; taken now when ``None``.
    """
    processes = list_processes() if processes is None else processes
    children: dict[int, list[ProcessInfo]] = {}
    for info in processes.values():
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessInfo] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child.pid != root and child not in found:
                found.append(child)
                pending.append(child.pid)
    return found


def marked_processes(entry: str, processes: dict[int, ProcessInfo] | None = None) -> list[ProcessInfo]:
    """The live processes (zombies left out) whose environment holds ``entry``, but this one.

    Args:
        entry: ``NAME=value``.
        processes: A snapshot from :func:`list_processes`; taken now when ``None``.
    """
    processes = list_processes() if processes is None else processes
    return [
        info
        for info in processes.values()
        if info.pid != os.getpid() and info.state != "Z" and has_environment_entry(info.pid, entry)
    ]


def is_alive(info: ProcessInfo) -> bool:
    """Whether ``info``'s process still runs: same pid and start time, and not a zombie."""
    now = read_process(info.pid)
    return now is not None and now.start_ticks == info.start_ticks and now.state != "Z"


def _signal_all(processes: Iterable[ProcessInfo], sig: int) -> None:
    for info in processes:
        if is_alive(info):  # checked just before: never a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pid, sig)


def wait_gone(processes: Iterable[ProcessInfo], timeout_s: float) -> list[ProcessInfo]:
    """Wait up to ``timeout_s`` for the processes to exit; those still alive then.

    Args:
        processes: Processes to watch.
        timeout_s: How long to wait at most.
    """
    deadline = time.monotonic() + timeout_s
    alive = [p for p in processes if is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if is_alive(p)]
    return alive


def stop_processes(
    processes: Iterable[ProcessInfo], grace_s: float = 0.0, term_s: float = 5.0
) -> list[ProcessInfo]:
    """Give the processes ``grace_s`` to exit, then SIGTERM, then SIGKILL what is left.

    Args:
        processes: Processes to stop (duplicates and dead ones are fine).
        grace_s: How long they may take to exit on their own first.
        term_s: How long they get after SIGTERM before SIGKILL.

    Returns:
        The processes that had to be signalled, that is, that did not exit on their own.
    """
    unique = list({p.key: p for p in processes}.values())
    left = wait_gone(unique, grace_s)
    if left:
        _signal_all(left, signal.SIGTERM)
        _signal_all(wait_gone(left, term_s), signal.SIGKILL)
        wait_gone(left, 5.0)
    return left


def started_by_run(
    marker_entry: str, root_pid: int, existing: set[tuple[int, int]] | None = None
) -> list[ProcessInfo]:
    """Live processes that a run started: descendants of ``root_pid``, or marked processes.

    Args:
        marker_entry: The run's ``NAME=value`` environment marker.
        root_pid: The process of the run (pytest's).
        existing: Keys (:attr:`ProcessInfo.key`) of processes alive when the run began:
            never counted.

    Returns:
        The processes, ``root_pid`` and Python's own helpers of it (its multiprocessing
        resource tracker, which exits with it) left out.
    """
    processes = list_processes()
    found = {p.key: p for p in marked_processes(marker_entry, processes)}
    found.update((p.key, p) for p in descendants(root_pid, processes) if p.state != "Z")
    existing = existing or set()
    return [
        info
        for key, info in sorted(found.items())
        if key not in existing
        and info.pid != root_pid
        and not (info.ppid == root_pid and any(h in info.cmdline for h in _HELPERS_OF_THEIR_PARENT))
    ]
