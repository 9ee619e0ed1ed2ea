"""The LLM router in the real Serve app, against two fake OpenAI-compatible HTTP servers.

Everything between the WebSocket and the HTTP servers is real: Serve's proxy, the Ingress,
the LLM deployment running ``backend: router`` with two ``openai`` routes, the ``openai``
SDK, HTTP on loopback. The first route's server fails every request (HTTP 503), the second
answers; the servers are ``tests/openai_fake_server.py`` (fakes, scripted replies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ray import serve

from tests.conftest import deploy_app
from tests.openai_fake_server import FakeOpenAIServer
from tests.realtime_client import RealtimeTestClient, user_text_item

APP = "routerapp"
REPLY = "Paris is the capital of France."
RETRIES = 1


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    """(failing, healthy) fake OpenAI servers, one per route."""
    with FakeOpenAIServer(mode="error") as failing, FakeOpenAIServer(reply=REPLY) as healthy:
        yield failing, healthy


def _route(name: str, server: FakeOpenAIServer) -> dict[str, Any]:
    # max_retries 0: the SDK's own retries would multiply the router's (and add its backoff).
    options = {"base_url": server.base_url, "api_key_env": "VOXRAY_UNSET_TEST_KEY", "max_retries": 0}
    return {"name": name, "backend": "openai", "model": "fake-model", "options": options}


@pytest.fixture(scope="module")
def app_url(serve_instance: str, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> Iterator[str]:
    failing, healthy = servers
    args = {
        "asr": {"backend": "fake"},
        "llm": {
            "backend": "router",
            "model": "default",
            "options": {
                "groups": {"default": [_route("failing", failing), _route("healthy", healthy)]},
                "retries": RETRIES,
                "backoff_s": 0.05,
                "cooldown_s": 600,  # stays skipped for the rest of the module
            },
        },
        "tts": {"backend": "fake", "options": {"ms_per_char": 10}},
    }
    prefix = deploy_app(APP, args)
    try:
        yield f"{serve_instance}{prefix}/v1/realtime"
    finally:
        serve.delete(APP)


def llm_stats() -> dict[str, Any]:
    return serve.get_deployment_handle("LLM", APP).stats.remote().result()


async def text_turn(client: RealtimeTestClient, text: str, count: int) -> dict[str, Any]:
    """Send a user message and ask for a reply; returns the ``count``-th ``response.done``."""
    await client.send(user_text_item(text))
    await client.send({"type": "response.create"})
    return await client.wait_for("response.done", count=count, timeout=60)


async def test_a_failing_route_falls_back_to_the_healthy_one_and_is_then_skipped(
    app_url: str, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
) -> None:
    failing, healthy = servers
    async with RealtimeTestClient(app_url) as client:
        done = await text_turn(client, "What is the capital of France?", 1)
        assert done["response"]["status"] == "completed", done
        assert " ".join(client.reply_text(done["response"]["id"]).split()) == REPLY
        assert client.of("error") == []
        assert (failing.requests, healthy.requests, healthy.completed) == (1 + RETRIES, 1, 1)
        assert healthy.bodies[-1]["messages"][-1] == {
            "role": "user",
            "content": "What is the capital of France?",
        }

        stats = await asyncio.to_thread(llm_stats)
        routes = {r["name"]: r for r in stats["routes"]["default"]}
        assert routes["failing"]["healthy"] is False  # unhealthy_after: 2 = 1 + RETRIES failures
        assert routes["failing"]["failures"] == 1 + RETRIES
        assert routes["failing"]["last_error"].startswith("InternalServerError: Error code: 503")
        assert routes["healthy"]["fallbacks_to"] == 1 and routes["healthy"]["successes"] == 1

        # The unhealthy route is skipped while the healthy one works: no request reaches it.
        done = await text_turn(client, "And of Germany?", 2)
        assert done["response"]["status"] == "completed", done
        assert (failing.requests, healthy.requests) == (1 + RETRIES, 2)


async def test_cancelling_a_reply_aborts_the_request_on_the_serving_server(
    app_url: str, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
) -> None:
    _, healthy = servers
    healthy.reply = " ".join(f"Word{i}." for i in range(400))
    healthy.word_delay_s = 0.02
    aborted_before = healthy.aborted
    try:
        async with RealtimeTestClient(app_url) as client:
            await client.send(user_text_item("Tell me a long story."))
            await client.send({"type": "response.create"})
            await client.wait_for("response.output_audio_transcript.delta", timeout=30)
            await client.send({"type": "response.cancel"})
            done = await client.wait_for("response.done", timeout=30)
            assert done["response"]["status"] == "cancelled", done

        # The cancel travels Ingress → LLM replica → router → openai SDK → closed HTTP stream.
        deadline = time.monotonic() + 10
        while healthy.aborted == aborted_before:
            assert time.monotonic() < deadline, "the fake server never saw the client go away"
            await asyncio.sleep(0.05)
        stats = await asyncio.to_thread(llm_stats)
        assert stats["active_generations"] == 0 and stats["aborted_generations"] >= 1
        assert stats["tokens_generated"] < 400  # earlier turns and part of this one
    finally:
        healthy.reply, healthy.word_delay_s = REPLY, 0.0
