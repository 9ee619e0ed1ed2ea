"""Finding and stopping the processes a test run started, and the run's end-of-session check.

The processes here are ``sleep``s with a unique duration, so that each is found by its
command line whatever happens; every test kills what it started, even when it fails.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import (
    PROC,
    ProcessInfo,
    descendants,
    environment_value,
    has_environment_entry,
    is_alive,
    list_processes,
    marked_processes,
    read_process,
    started_by_run,
    stop_processes,
)

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux's /proc")

ROOT = Path(__file__).resolve().parents[2]


def sleeping(processes: dict[int, ProcessInfo] | None = None) -> dict[str, ProcessInfo]:
    """Live ``sleep`` processes by their argument."""
    processes = list_processes() if processes is None else processes
    return {
        p.cmdline.split()[1]: p
        for p in processes.values()
        if p.name == "sleep" and p.state != "Z" and len(p.cmdline.split()) == 2
    }


def unique_duration() -> str:
    return f"{random.randrange(100_000, 999_999)}.{random.randrange(1000)}"


def wait_for_sleep(duration: str, timeout_s: float = 10) -> ProcessInfo:
    deadline = time.monotonic() + timeout_s
    while (found := sleeping().get(duration)) is None:
        assert time.monotonic() < deadline, f"sleep {duration} did not start"
        time.sleep(0.05)
    return found


def read_started(pid: int, timeout_s: float = 5.0) -> ProcessInfo | None:
    """``read_process`` once the child has exec'd: /proc shows an empty cmdline for a moment."""
    deadline = time.monotonic() + timeout_s
    info = read_process(pid)
    while info is not None and not info.cmdline and time.monotonic() < deadline:
        time.sleep(0.01)
        info = read_process(pid)
    return info


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Durations of the sleeps a test starts: any still running at its end are killed."""
    durations: list[str] = []
    yield durations
    stop_processes([p for d, p in sleeping().items() if d in durations])


def test_a_child_is_found_by_its_tree_and_its_environment(cleanup: list[str]) -> None:
    entry = f"VOXRAY_TEST_PROBE={uuid.uuid4().hex}"
    name, value = entry.split("=")
    duration = unique_duration()
    cleanup.append(duration)
    child = subprocess.Popen(["sleep", duration], env={**os.environ, name: value}, start_new_session=True)
    try:
        info = read_started(child.pid)
        assert info is not None and info.name == "sleep" and info.ppid == os.getpid()
        assert info.cmdline == f"sleep {duration}"
        assert has_environment_entry(child.pid, entry)
        assert not has_environment_entry(child.pid, f"{name}=other")
        assert not has_environment_entry(os.getpid(), entry)  # the child's alone
        assert environment_value(child.pid, name) == value
        assert environment_value(child.pid, "VOXRAY_NO_SUCH_VARIABLE") is None
        assert [p.pid for p in marked_processes(entry)] == [child.pid]
        assert child.pid in {p.pid for p in descendants(os.getpid())}
        assert child.pid in {p.pid for p in started_by_run(entry, os.getpid())}
        assert child.pid not in {p.pid for p in started_by_run(entry, os.getpid(), existing={info.key})}

        # it would not exit by itself
        assert [p.key for p in stop_processes([info], grace_s=0.2)] == [info.key]
        child.wait(timeout=10)
        assert not is_alive(info)
        assert stop_processes([info]) == []  # gone: nothing to do
    finally:
        child.kill()
        child.wait()


def test_an_orphan_in_its_own_session_is_found_by_its_environment(cleanup: list[str]) -> None:
    """As Serve's HAProxy after its worker died: re-parented, out of the tree."""
    entry = f"VOXRAY_TEST_PROBE={uuid.uuid4().hex}"
    name, value = entry.split("=")
    duration = unique_duration()
    cleanup.append(duration)
    subprocess.run(
        ["sh", "-c", f"setsid sleep {duration} >/dev/null 2>&1 &"],
        env={**os.environ, name: value},
        check=True,
    )
    orphan = wait_for_sleep(duration)
    assert orphan.pid not in {p.pid for p in descendants(os.getpid())}
    # (The shell and setsid that started it carry the marker too, for the moment they live.)
    marked = [p for p in marked_processes(entry) if p.name == "sleep"]
    # Compared by identity: its state letter may change between the two reads (R, then S).
    assert [p.key for p in marked] == [orphan.key]
    assert [p.key for p in stop_processes(marked)] == [orphan.key]
    assert not is_alive(orphan)


def test_a_process_that_exits_within_the_grace_period_is_not_signalled() -> None:
    child = subprocess.Popen(["sleep", "0.5"])
    try:
        info = read_started(child.pid)
        assert info is not None
        assert stop_processes([info], grace_s=10) == []  # a zombie once it exits: not alive
        assert child.wait(timeout=10) == 0  # it exited by itself, not by a signal
    finally:
        child.kill()
        child.wait()


def run_pytest(tmp_path: Path, test_body: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on one test file with this repository's conftest hooks (``-p tests.conftest``)."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(test_body))
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            str(test_file),
        ],
        cwd=ROOT,
        env={**os.environ, "VOXRAY_LEAK_GRACE_S": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_that_leaves_a_process_running_fails_and_kills_it(tmp_path: Path, cleanup: list[str]) -> None:
    leaked, child, bystander = (unique_duration() for _ in range(3))
    cleanup.extend([leaked, child, bystander])
    # Started before the run, by someone else (this test): the run must leave it alone.
    unrelated = subprocess.Popen(["sleep", bystander], start_new_session=True)
    try:
        result = run_pytest(
            tmp_path,
            f"""
            import subprocess

            def test_leaks():
                # Like Serve's HAProxy: its own session, its parent gone at once.
                subprocess.run(["sh", "-c", "setsid sleep {leaked} >/dev/null 2>&1 &"], check=True)
                subprocess.Popen(["sleep", "{child}"])  # a child never waited for

            def test_exits_in_time():
                subprocess.Popen(["sh", "-c", "sleep 1"], start_new_session=True)  # within the grace
            """,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "2 passed" in output
        assert "processes left running" in output
        assert f"sleep {leaked}" in output and f"sleep {child}" in output
        assert "started during test_inner.py::test_leaks (call):" in output
        assert bystander not in output and "sh -c sleep 1" not in output
        running = sleeping()
        assert leaked not in running and child not in running  # killed
        assert bystander in running
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_run_that_stops_what_it_started_passes(tmp_path: Path) -> None:
    result = run_pytest(
        tmp_path,
        """
        import subprocess

        def test_cleans_up():
            child = subprocess.Popen(["sleep", "600"], start_new_session=True)
            child.kill()
            child.wait()
        """,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "processes left running" not in output


def test_a_failed_run_keeps_its_exit_status(tmp_path: Path, cleanup: list[str]) -> None:
    leaked = unique_duration()
    cleanup.append(leaked)
    result = run_pytest(
        tmp_path,
        f"""
        import subprocess

        def test_fails_and_leaks():
            subprocess.Popen(["sleep", "{leaked}"], start_new_session=True)
            raise AssertionError("boom")
        """,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed" in output and f"sleep {leaked}" in output
    assert leaked not in sleeping()
