"""Limits on the real Serve app: each ends the session with an ``error`` event and a close code.

Small limits make each case quick: an idle session, one that outlives its maximum length,
a replica at capacity, a client that stops reading, and the Ingress replica restarting.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets
from ray import serve

from tests.conftest import deploy_app, kill_only_replica
from tests.realtime_client import validate_server_event

APP = "limitsapp"
LONG_REPLY = " ".join(f"Sentence number {i} is here and it is long." for i in range(80))
ARGS: dict[str, Any] = {
    "asr": {"backend": "fake"},
    "llm": {"backend": "fake", "options": {"reply": LONG_REPLY, "tokens_per_s": 5000}},
    "tts": {"backend": "fake", "options": {"realtime_factor": 0.001, "ms_per_char": 60}},
    "session": {"max_audio_lead_ms": 0},  # audio as fast as it is made: a non-reader falls behind fast
    "limits": {
        "idle_timeout_s": 2,
        "max_session_s": 8,
        "send_timeout_s": 3,
        "max_outbound_bytes": 256 << 10,
        "max_sessions_per_replica": 3,
    },
}


@pytest.fixture(scope="module")
def base(serve_instance: str) -> str:
    return serve_instance + deploy_app(APP, ARGS)


async def open_session(base: str, **kwargs: Any) -> Any:
    ws = await websockets.connect(f"{base}/v1/realtime", max_size=None, **kwargs)
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"
    return ws


async def closing_error(ws: Any, timeout: float = 30) -> tuple[dict[str, Any] | None, int | None, str]:
    """Read until the server closes; the last ``error`` event and the close code and reason."""
    last_error = None
    try:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            validate_server_event(event)
            if event["type"] == "error":
                last_error = event
    except websockets.ConnectionClosed:
        pass
    return last_error, ws.close_code, ws.close_reason


def ingress_stats(app: str) -> dict[str, Any]:
    return serve.get_deployment_handle("Ingress", app).stats.remote().result()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(pid)


async def test_idle_session_is_closed(base: str) -> None:
    ws = await open_session(base)
    error, code, reason = await closing_error(ws)
    assert error is not None and error["error"]["code"] == "idle_timeout"
    assert (code, reason) == (1008, "idle timeout")


async def test_session_longer_than_the_maximum_is_closed(base: str) -> None:
    ws = await open_session(base)
    started = time.monotonic()

    async def keep_talking() -> None:
        while True:  # a busy client: never idle
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await asyncio.sleep(0.5)

    talker = asyncio.create_task(keep_talking())
    try:
        error, code, reason = await closing_error(ws)
    finally:
        talker.cancel()
        await asyncio.gather(talker, return_exceptions=True)
    assert error is not None and error["error"]["code"] == "session_expired"
    assert (code, reason) == (1008, "maximum session duration reached")
    assert time.monotonic() - started >= 7


async def test_replica_at_capacity_refuses_with_try_again_later(base: str) -> None:
    sessions = [await open_session(base) for _ in range(3)]
    try:
        ws = await websockets.connect(f"{base}/v1/realtime")
        error, code, _ = await closing_error(ws)
        assert error is not None and error["error"]["code"] == "session_limit_reached"
        assert code == 1013
    finally:
        for ws in sessions:
            await ws.close()


async def test_ingress_restart_closes_sessions_with_service_restart(serve_instance: str) -> None:
    app = "restartapp"
    args = {**ARGS, "limits": {}}
    base = serve_instance + await asyncio.to_thread(deploy_app, app, args)
    ws = await open_session(base)
    # A config change replaces the Ingress replica. The old one drains: its sessions go on
    # until Serve's grace (20 s by default) is nearly over, then get 1012 to reconnect.
    changed = {**args, "session": {"instructions": "Be brief."}}
    redeploy = asyncio.create_task(asyncio.to_thread(deploy_app, app, changed))
    error, code, reason = await closing_error(ws, timeout=60)
    assert error is not None and error["error"]["code"] == "server_shutting_down"
    assert (code, reason) == (1012, "server restarting; reconnect")
    await redeploy
    ws = await open_session(base)  # reconnecting works
    # A replica killed outright cannot say anything; the client must still see a close, not a hang.
    await asyncio.to_thread(kill_only_replica, app, "Ingress")
    _, code, _ = await closing_error(ws, timeout=60)
    assert code is not None and code != 1000
    serve.delete(app)
