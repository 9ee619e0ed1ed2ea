"""Shared fixtures for tests that load the real embedded models (``-m models``).

Each backend is loaded and warmed up once per module: loading takes seconds, and the
tests only need a backend without requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest


def _warm(backend: Any) -> Any:
    asyncio.run(backend.warmup())
    return backend


@pytest.fixture(scope="module")
def piper_tts() -> Iterator[Any]:
    """The bundled Piper voice (``bundled:piper-joe-medium``), without generator noise.

    With Piper's default noise the same sentence sounds a little different each run, and in
    one clean-checkout CI run Whisper base heard "the capital of friends"; noise 0 makes the
    speech, and so the tests that transcribe it, the same every run.
    """
    pytest.importorskip("piper", reason="piper-tts is not installed (extra [cpu])")
    from deployments.backends.piper_tts import PiperTTS

    yield _warm(PiperTTS(None, {"noise_scale": 0.0, "noise_w_scale": 0.0}))


@pytest.fixture(scope="module")
def whisper_asr() -> Iterator[Any]:
    """The bundled Whisper base model (``bundled:whisper-base``)."""
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (extra [cpu])")
    from deployments.backends.faster_whisper_asr import FasterWhisperASR

    yield _warm(FasterWhisperASR(None))


@pytest.fixture(scope="module")
def llama_llm() -> Iterator[Any]:
    """The bundled Qwen2.5 0.5B GGUF on llama.cpp."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra [cpu])")
    from deployments.backends.llamacpp_llm import LlamaCppLLM

    yield _warm(LlamaCppLLM(None, {"n_ctx": 1024}))


@pytest.fixture(scope="package")
def grpc_models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app of ``configs/local.yaml`` (the embedded models) behind HAProxy, gRPC included.

    As ``scripts/run.sh`` serves it, in a cluster of its own: real gRPC clients (the NVIDIA
    Riva library, the VoiceGateway contract) call it unmodified, with no ``application``
    metadata, which only a single-app server routes. One for the models tier: it stops when the
    tier ends, so the serve tier does not run beside its models.
    """
    from pathlib import Path

    import yaml

    from tests.grpc_harness import wait_serving
    from tests.serve.haproxy_server import haproxy_server

    config = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"
    args = yaml.safe_load(config.read_text())["applications"][0]["args"]
    with haproxy_server(args, Path(tmp_path_factory.mktemp("grpc-models")), timeout_s=600) as running:
        wait_serving(running.grpc_target, timeout_s=300)
        yield running
