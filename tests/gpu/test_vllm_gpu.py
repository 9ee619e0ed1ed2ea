"""vLLM on a CUDA device through Ray Serve's LLM stack: the tiny Llama, streamed and cancelled.

The same deployment as ``tests/models/test_vllm_engine.py`` with the engine on a GPU bundle
(a half GPU, as ``configs/gpu.yaml`` gives it) instead of the CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.gpu

APP = "vllm-gpu"
MODEL_ID = "tiny-llama-gpu"


@pytest.fixture(scope="module")
def llm_handle(serve_instance: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("vllm")
    pytest.importorskip("ray.serve.llm")
    import ray
    from ray import serve

    from serve_app.app import bind_llm, load_config
    from tests.tiny_llama import build_tiny_llama

    if ray.cluster_resources().get("GPU", 0) < 0.5:
        pytest.skip("the Ray cluster sees no GPU")
    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    engine = {
        "model_loading_config": {"model_id": MODEL_ID, "model_source": str(model_dir)},
        "engine_kwargs": {"max_model_len": 8192, "gpu_memory_utilization": 0.3, "enforce_eager": True},
        "placement_group_config": {"bundles": [{"GPU": 0.5, "CPU": 1}]},
        "experimental_configs": {"stream_batching_interval_ms": 0},
    }
    llm = {"backend": "serve_llm", "model": MODEL_ID, "options": {"extra_body": {"ignore_eos": True}}}
    handle = serve.run(
        bind_llm(load_config({"llm": llm, "llm_engines": [engine]})), name=APP, route_prefix=None
    )
    try:
        yield handle
    finally:
        serve.delete(APP)


async def test_streams_and_cancels_on_the_gpu(llm_handle: Any) -> None:
    from ray import serve

    from deployments.llm_engines import engine_deployment_name
    from deployments.types import ChatMessage, SamplingParams

    engine = serve.get_deployment_handle(engine_deployment_name(MODEL_ID), APP)
    messages = [ChatMessage(role="user", content="Hello there")]
    response = llm_handle.options(stream=True).chat.remote(messages, SamplingParams(max_tokens=8000, seed=3))
    received = 0
    async for _ in response:
        received += 1
        if received == 5:
            break
    assert (await engine.engine_stats.remote())["unfinished_requests"] == 1
    response.cancel()
    deadline = time.monotonic() + 10
    while (await engine.engine_stats.remote())["unfinished_requests"] != 0:
        assert time.monotonic() < deadline, "vLLM still holds the cancelled request"
        await asyncio.sleep(0.1)
