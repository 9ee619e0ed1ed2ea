"""configs/gpu.yaml: the production GPU layout is valid and its GPU fractions add up.

Ray's own schema and the project's models are checked for every shipped config in
``test_config.py``; here are the GPU-specific promises the README makes about this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.app import load_config

GPU_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gpu.yaml"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(GPU_CONFIG.read_text())


@pytest.fixture(scope="module")
def app(document: dict[str, Any]) -> dict[str, Any]:
    return document["applications"][0]


def deployment(app: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in app["deployments"] if d["name"] == name)


def test_the_production_models_are_configured(app: dict[str, Any]) -> None:
    config = load_config(app["args"])
    assert (config.asr.backend, config.asr.model) == ("nemo", "nvidia/parakeet-tdt-0.6b-v2")
    assert (config.tts.backend, config.tts.model) == ("nemo", "nvidia/tts_en_fastpitch")
    assert config.tts.options["vocoder"] == "nvidia/tts_hifigan"
    assert config.llm.backend == "router"
    [route] = config.llm.options["groups"][config.llm.model]
    assert route["backend"] == "serve_llm"
    [engine] = config.llm_engines
    assert engine["model_loading_config"]["model_id"] == route["model"]
    assert engine["model_loading_config"]["model_source"] == "meta-llama/Llama-3.2-3B-Instruct"


def test_one_replica_of_each_gpu_stage_fits_on_one_gpu(app: dict[str, Any]) -> None:
    asr = deployment(app, "ASR")["ray_actor_options"]["num_gpus"]
    tts = deployment(app, "TTS")["ray_actor_options"]["num_gpus"]
    speaker = deployment(app, "Speaker")["ray_actor_options"]["num_gpus"]
    [engine] = app["args"]["llm_engines"]
    vllm = sum(bundle.get("GPU", 0) for bundle in engine["placement_group_config"]["bundles"])
    assert 0 < asr < 1 and 0 < tts < 1 and 0 < speaker < 1 and 0 < vllm < 1  # fractional: they share a GPU
    assert asr + tts + speaker + vllm <= 1.0


def test_vllm_memory_stays_within_its_gpu_share(app: dict[str, Any]) -> None:
    # vLLM takes gpu_memory_utilization of the WHOLE device, whatever Ray's fraction says:
    # above its share it would starve ASR and TTS on the same GPU.
    [engine] = app["args"]["llm_engines"]
    share = sum(bundle.get("GPU", 0) for bundle in engine["placement_group_config"]["bundles"])
    assert engine["engine_kwargs"]["gpu_memory_utilization"] <= share


def test_the_ingress_is_cpu_only_and_autoscales_on_sessions(app: dict[str, Any]) -> None:
    ingress = deployment(app, "Ingress")
    assert ingress["ray_actor_options"].get("num_gpus", 0) == 0
    scaling = ingress["autoscaling_config"]
    limits = load_config(app["args"]).limits
    # Each session is one ongoing request for its whole life, so the targets count sessions.
    assert scaling["target_ongoing_requests"] < ingress["max_ongoing_requests"]
    assert ingress["max_ongoing_requests"] <= limits.max_sessions_per_replica
    assert scaling["min_replicas"] >= 2  # one replica restarting must not refuse everyone


@pytest.mark.parametrize("name", ["Ingress", "ASR", "TTS", "LLM", "Speaker"])
def test_every_deployment_autoscales(app: dict[str, Any], name: str) -> None:
    scaling = deployment(app, name)["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]
    assert scaling["downscale_delay_s"] > scaling["upscale_delay_s"]


def test_public_host_means_keys_are_expected(document: dict[str, Any], app: dict[str, Any]) -> None:
    # 0.0.0.0 without API keys is refused at start (serve_app.server.admission.check_exposure);
    # the keys come from the environment (a Secret), not from this file.
    assert document["http_options"]["host"] == "0.0.0.0"
    auth = load_config(app["args"]).auth
    assert auth.api_keys == [] and auth.api_keys_env == "VOXRAY_API_KEYS"
