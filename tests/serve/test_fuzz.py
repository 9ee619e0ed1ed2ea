"""Protocol fuzzing on the real Serve app: every hostile input gets its documented answer.

Each case of ``tests/fuzz_cases.py`` is played on its own WebSocket (a few at a time), and
its outcome is checked exactly: the error events' ``code``, ``param`` and ``event_id``, the
legitimate replies, or the close code. A connection that was not meant to close must still
answer a valid event afterwards. Meanwhile one healthy session holds spoken turns beside
the fuzzing; each must complete with audio, and the server must still answer ``/healthz``.
Every event received, on any connection, is validated against the official ``openai`` types.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from ray import serve

from tests.conftest import deploy_app
from tests.fuzz_cases import CASES, Case, Fragments, Frame, RawText
from tests.realtime_client import EventLog, RealtimeTestClient

APP = "fuzzapp"
CONCURRENCY = 4  # fuzz connections at a time: enough overlap to matter, gentle on 2 cores
TIMEOUT_S = 60.0  # only against hangs; nothing here is timed
PROBE: dict[str, Any] = {"type": "input_audio_buffer.clear", "event_id": "evt_probe"}
MAX_ERROR_EVENT_BYTES = 2048  # an error event never echoes a client's megabytes back
MIN_HEALTHY_TURNS = 2


@pytest.fixture(scope="module")
def fuzz_base(serve_instance: str) -> Iterator[str]:
    """``ws://host:port/fuzzapp``: the app with scripted fake models and default limits.

    Deleted afterwards, so its replicas' logical CPUs are free for the apps of later modules.
    """
    args = {
        "asr": {"backend": "fake", "options": {"transcripts": ["What is the capital of France?"]}},
        "llm": {
            "backend": "fake",
            "options": {"reply": "The capital of France is Paris.", "tokens_per_s": 50},
        },
        "tts": {"backend": "fake", "options": {"realtime_factor": 0.2, "ms_per_char": 60}},
        "session": {"max_audio_lead_ms": 500},
    }
    yield serve_instance + deploy_app(APP, args)
    serve.delete(APP)


class FuzzConnection(EventLog):
    """One raw WebSocket: sends frames exactly as given and records the (validated) events.

    Problems seen while reading (an event the SDK types reject, an oversized error) are kept
    in ``failure`` rather than raised in the reader task, where nobody would see them.
    """

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws
        self.failure: str | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                event = json.loads(message)
                if event.get("type") == "error" and len(message) > MAX_ERROR_EVENT_BYTES:
                    self.failure = f"error event of {len(message)} bytes: {message[:200]}"
                self.record(event)
        except websockets.ConnectionClosed:
            pass  # the close code is checked by the case
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed.set()
            self._changed.set()  # wake any waiter: it must notice the close

    async def send(self, frame: Frame) -> None:
        """Send one frame as ``tests/fuzz_cases.py`` describes (a dict as JSON text, and so on)."""
        if isinstance(frame, dict):
            await self.ws.send(json.dumps(frame))
        elif isinstance(frame, RawText):
            await self.ws.send(frame.data, text=True)
        elif isinstance(frame, Fragments):
            await self.ws.send(list(frame.parts))
        else:
            await self.ws.send(frame)

    async def expect(self, type_: str, count: int = 1) -> None:
        """Wait for ``count`` events of ``type_``; fails at once if the socket closes first."""

        async def _wait() -> None:
            while len(self.of(type_)) < count:
                if self.closed.is_set():
                    raise AssertionError(
                        f"closed ({self.ws.close_code}) before {count} x {type_}; last events "
                        f"{self.types()[-4:]}; {self.failure or ''}"
                    )
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), TIMEOUT_S)


def _check_errors(case: Case, errors: list[dict[str, Any]]) -> None:
    low, high = case.errors if isinstance(case.errors, tuple) else (case.errors, case.errors)
    summary = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in errors]
    assert low <= len(errors) <= high, f"expected {case.errors} x {case.error}, got {summary[:5]}"
    for event in errors:
        error = event["error"]
        got = (error["type"], error["code"], error["param"], error["event_id"])
        assert got == ("invalid_request_error", case.error, case.param, case.event_id), error


async def run_case(base: str, case: Case) -> None:
    """Play one case on a fresh connection and check its documented outcome."""
    async with websockets.connect(f"{base}/v1/realtime", max_size=None, open_timeout=TIMEOUT_S) as ws:
        conn = FuzzConnection(ws)
        await conn.expect("session.created")
        try:
            for frame in case.frames:
                await conn.send(frame)
            if case.close is None:
                await conn.send(PROBE)  # a valid event: the session must still answer it
        except websockets.ConnectionClosed:
            assert case.close is not None, f"closed ({ws.close_code}) while sending: {conn.types()[-4:]}"
        if case.close is not None:
            await asyncio.wait_for(conn.closed.wait(), TIMEOUT_S)
            assert ws.close_code == case.close, (ws.close_code, ws.close_reason, conn.types()[-4:])
            errors = conn.of("error")
            if case.final_error is not None:
                assert errors and errors[-1] is conn.events[-1], conn.types()[-4:]
                assert errors[-1]["error"]["code"] == case.final_error, errors[-1]
                errors = errors[:-1]
            _check_errors(case, errors)
        else:
            for reply in case.replies:
                await conn.expect(reply)
            # Errors are sent in order, before the probe is answered: after it, the count is final.
            await conn.expect(
                "input_audio_buffer.cleared", case.replies.count("input_audio_buffer.cleared") + 1
            )
            _check_errors(case, conn.of("error"))
        assert conn.failure is None, conn.failure


async def fuzz(base: str) -> dict[str, str]:
    """Run every case, ``CONCURRENCY`` at a time; returns the failures by case name."""
    slots = asyncio.Semaphore(CONCURRENCY)
    failures: dict[str, str] = {}

    async def one(case: Case) -> None:
        async with slots:
            try:
                await run_case(base, case)
            except Exception as exc:
                failures[case.name] = f"{type(exc).__name__}: {str(exc)[:400]}"

    await asyncio.gather(*(one(case) for case in CASES))
    return failures


async def healthy_turns(base: str, utterance: bytes, fuzzing_done: asyncio.Event) -> RealtimeTestClient:
    """Spoken turns, one after another, until the fuzzing is over (and at least two)."""
    async with RealtimeTestClient(f"{base}/v1/realtime") as client:
        turns = 0
        while not fuzzing_done.is_set() or turns < MIN_HEALTHY_TURNS:
            await client.stream_audio(utterance, realtime=False)
            turns += 1
            done = await client.wait_for("response.done", count=turns, timeout=TIMEOUT_S)
            if done["response"]["status"] != "completed":
                break  # reported by the test, with the whole list
        return client


def healthz(base: str) -> dict[str, Any]:
    """``GET /healthz`` of the app, over plain HTTP on the same host, port and prefix."""
    url = base.replace("ws://", "http://", 1) + "/healthz"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        return json.loads(reply.read())  # type: ignore[no-any-return]


def test_fuzz_table_is_broad() -> None:
    """The issue asks for at least 50 distinct hostile inputs; every name is unique."""
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names) >= 60


async def test_hostile_input_gets_documented_answers_beside_a_healthy_session(
    fuzz_base: str, make_utterance: Callable[..., bytes]
) -> None:
    utterance = make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
    fuzzing_done = asyncio.Event()
    healthy = asyncio.create_task(healthy_turns(fuzz_base, utterance, fuzzing_done))
    try:
        failures = await fuzz(fuzz_base)
    finally:
        fuzzing_done.set()
    client = await healthy

    assert not failures, "\n".join(f"{name}: {why}" for name, why in sorted(failures.items()))
    dones = client.of("response.done")
    assert len(dones) >= MIN_HEALTHY_TURNS
    for done in dones:
        assert done["response"]["status"] == "completed", done["response"]
        assert client.reply_audio(done["response"]["id"]), "a healthy turn had no audio"
    assert client.of("error") == []

    assert (await asyncio.to_thread(healthz, fuzz_base))["status"] == "ok"
    deadline = time.monotonic() + TIMEOUT_S  # every fuzz session is gone once its socket is
    while (
        sessions := (await asyncio.to_thread(healthz, fuzz_base))["sessions"]
    ) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert sessions == 0
