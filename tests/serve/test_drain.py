"""Upgrades and scale-downs drain live sessions instead of cutting them.

A head node runs as KubeRay runs it and takes Serve configs the way a RayService update
applies ``serveConfigV2`` (``tests/serve/rayservice_head.py``), in HAProxy mode as the
manifests set it. With sessions open on every Ingress replica, the application is
redeployed with a changed config and then scaled in: turns in flight finish, live sessions
keep talking to their old replicas, new sessions get the new config, and no session sees
anything but its own clean close. A replica whose grace runs out ends its sessions with
1012 (reconnect) before Serve kills it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from serve_app.server.drain import DRAIN_CLOSE_MARGIN_S
from tests.realtime_client import RealtimeTestClient, user_text_item
from tests.serve.haproxy_server import ingress_servers_up
from tests.serve.rayservice_head import RayServiceHead, rayservice_head

pytestmark = pytest.mark.timeout(900)

APP = "voxray"
ARGS: dict[str, Any] = {
    "asr": {"backend": "fake", "model": None},
    # ~2 s per reply: long enough to be mid-turn when the config changes.
    "llm": {
        "backend": "fake",
        "model": None,
        "options": {"reply": "one two three four five six seven eight nine ten", "tokens_per_s": 5},
    },
    "tts": {"backend": "fake", "model": None},
    "vad": {"model": "bundled:silero-vad"},
}


def application(instructions: str, ingress_replicas: int, grace_s: float = 300) -> dict[str, Any]:
    """The voxray app as a RayService's ``serveConfigV2`` lists it."""
    small = {"num_cpus": 0.25}
    return {
        "name": APP,
        "route_prefix": "/",
        "import_path": "serve_app.app:build_app",
        "args": {**ARGS, "session": {"instructions": instructions}},
        "deployments": [
            {
                "name": "Ingress",
                "num_replicas": ingress_replicas,
                "graceful_shutdown_timeout_s": grace_s,
                "graceful_shutdown_wait_loop_s": 1,
                "ray_actor_options": small,
            },
            *({"name": n, "num_replicas": 1, "ray_actor_options": small} for n in ("ASR", "LLM", "TTS")),
        ],
    }


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServiceHead]:
    with rayservice_head(tmp_path_factory.mktemp("rayservice")) as head:
        yield head


def apply_and_wait(head: RayServiceHead, app: dict[str, Any], ingress_up: int) -> None:
    """Apply ``app`` and wait until it runs and HAProxy routes to ``ingress_up`` Ingress replicas."""
    head.apply([app])
    head.wait_running(APP)
    wait_until(lambda: len(ingress_servers_up(head.stats_port)) == ingress_up, "HAProxy routing")


def wait_until(predicate: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.5)


async def start_turn(client: RealtimeTestClient, text: str) -> int:
    """Ask for a reply; returns how many ``response.done`` the client had before."""
    before = len(client.of("response.done"))
    await client.send(user_text_item(text))
    await client.send({"type": "response.create"})
    await client.wait_for("response.created", count=len(client.of("response.created")) + 1)
    return before


async def finish_turn(client: RealtimeTestClient, before: int) -> dict[str, Any]:
    done = await client.wait_for("response.done", count=before + 1, timeout=60)
    return done["response"]


async def turn(client: RealtimeTestClient, text: str) -> dict[str, Any]:
    return await finish_turn(client, await start_turn(client, text))


def assert_clean(clients: list[RealtimeTestClient]) -> None:
    """No session got an error or a close it did not ask for, and every reply completed."""
    for client in clients:
        assert client.of("error") == [], client.of("error")
        assert all(d["response"]["status"] == "completed" for d in client.of("response.done"))


def session_instructions(client: RealtimeTestClient) -> str:
    return client.of("session.created")[0]["session"]["instructions"]


async def open_clients(head: RayServiceHead, n: int) -> list[RealtimeTestClient]:
    clients = [RealtimeTestClient(head.url()) for _ in range(n)]
    for client in clients:
        await client.__aenter__()
    return clients


async def close_clients(clients: list[RealtimeTestClient]) -> None:
    for client in clients:
        await client.__aexit__(None, None, None)


async def test_redeploy_and_scale_in_let_live_sessions_finish(head: RayServiceHead) -> None:
    await asyncio.to_thread(apply_and_wait, head, application("v1", ingress_replicas=2), 2)
    old = await open_clients(head, 6)
    try:
        await asyncio.gather(*(turn(c, "hello") for c in old))
        per_replica = head.ingress_sessions()
        assert len(per_replica) == 2 and all(n > 0 for n in per_replica.values()), per_replica

        # A RayService update of serveConfigV2: a new Ingress version replaces both replicas
        # while every session is mid-reply.
        in_flight = [await start_turn(c, "tell me more") for c in old]
        await asyncio.to_thread(head.apply, [application("v2", ingress_replicas=2)])
        redeployed = time.monotonic()
        replies = await asyncio.gather(*(finish_turn(c, n) for c, n in zip(old, in_flight, strict=True)))
        assert all(r["status"] == "completed" for r in replies)
        # (The app reads DEPLOYING until the old replicas are gone: Serve counts them.)
        await asyncio.to_thread(
            wait_until, lambda: head.replica_states(APP, "Ingress").count("RUNNING") == 2, "new replicas"
        )
        # The old replicas drain: still there for their sessions, which go on talking.
        assert head.replica_states(APP, "Ingress").count("STOPPING") == 2
        await asyncio.sleep(35)  # past HAProxy mode's 30 s deregistration window
        await asyncio.gather(*(turn(c, "and now?") for c in old))
        assert all(session_instructions(c) == "v1" for c in old)

        new = await open_clients(head, 4)
        try:
            assert all(session_instructions(c) == "v2" for c in new)  # new sessions: new replicas
            await asyncio.gather(*(turn(c, "hello") for c in new))

            # Scale the Ingress in, 2 -> 1, with a turn in flight on every new session.
            in_flight = [await start_turn(c, "go on") for c in new]
            await asyncio.to_thread(head.apply, [application("v2", ingress_replicas=1)])
            replies = await asyncio.gather(*(finish_turn(c, n) for c, n in zip(new, in_flight, strict=True)))
            assert all(r["status"] == "completed" for r in replies)
            await asyncio.to_thread(
                wait_until, lambda: head.replica_states(APP, "Ingress").count("STOPPING") == 3, "scale-in"
            )
            # HAProxy reloaded on each change; the process holding the oldest connections is
            # past Serve's default hard-stop-after (120 s), which serve_env raises.
            await asyncio.sleep(max(0.0, 130 - (time.monotonic() - redeployed)))
            await asyncio.gather(*(turn(c, "still there?") for c in [*old, *new]))
            assert_clean([*old, *new])
        finally:
            await close_clients(new)
    finally:
        await close_clients(old)
    # With their sessions gone, the drained replicas stop well before their grace runs out.
    started = time.monotonic()
    await asyncio.to_thread(
        wait_until, lambda: head.replica_states(APP, "Ingress") == ["RUNNING"], "drained replicas stop"
    )
    assert time.monotonic() - started < 60
    await asyncio.to_thread(head.wait_running, APP, 30)


async def test_sessions_outliving_the_grace_are_told_to_reconnect(head: RayServiceHead) -> None:
    grace_s = 40  # Serve floors an ingress's grace to 35 s in HAProxy mode
    await asyncio.to_thread(apply_and_wait, head, application("short", 1, grace_s=grace_s), 1)
    ws = await websockets.connect(head.url(), max_size=None)
    assert '"session.created"' in await asyncio.wait_for(ws.recv(), 30)
    await asyncio.to_thread(head.apply, [application("next", 1, grace_s=grace_s)])
    applied = time.monotonic()
    errors = []
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), 60)
            if '"error"' in message:
                errors.append(message)
    except websockets.ConnectionClosed:
        pass
    lived = time.monotonic() - applied
    assert (ws.close_code, ws.close_reason) == (1012, "server restarting; reconnect")
    assert len(errors) == 1 and "server_shutting_down" in errors[0]
    # Ended by voxray near the end of the grace, not at the start of the drain nor by a kill.
    assert grace_s - DRAIN_CLOSE_MARGIN_S - 5 <= lived <= grace_s, lived
    async with RealtimeTestClient(head.url()) as client:  # reconnecting lands on the new replica
        assert session_instructions(client) == "next"
