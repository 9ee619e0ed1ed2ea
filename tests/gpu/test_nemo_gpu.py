"""NeMo ASR (batched) and FastPitch + HiFi-GAN on a CUDA device, with the tiny test models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.gpu

CLIENT_RATE = 24_000


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("nemo.collections.asr")
    from tests.nemo_tiny import build_tiny_fastpitch, build_tiny_hifigan, build_tiny_tdt

    root = tmp_path_factory.mktemp("nemo-gpu")
    return {
        "tdt": build_tiny_tdt(root / "tdt" / "tiny-tdt.nemo"),
        "fastpitch": build_tiny_fastpitch(root / "tiny-fastpitch.nemo"),
        "hifigan": build_tiny_hifigan(root / "tiny-hifigan.nemo"),
    }


def test_asr_batch_runs_on_the_gpu(
    tiny_models: dict[str, Path], make_utterance: Callable[..., bytes]
) -> None:
    from deployments.backends.nemo_asr import NemoASR

    backend = NemoASR(str(tiny_models["tdt"]), {"device": "cuda", "compute_dtype": "bfloat16"})
    asyncio.run(backend.warmup())
    assert backend.device == "cuda"
    assert next(backend._model.parameters()).is_cuda
    texts = ["Hello there.", "What is the capital of France?", "The weather is sunny today."]
    items = [(make_utterance(t, rate=CLIENT_RATE), CLIENT_RATE, "en") for t in texts]
    transcripts = asyncio.run(backend.transcribe_batch(items))
    assert len(transcripts) == len(texts)
    assert backend.stats()["largest_batch"] == len(texts)


def test_tts_streams_audio_from_the_gpu(tiny_models: dict[str, Path]) -> None:
    from deployments.backends.nemo_tts import NemoTTS

    backend = NemoTTS(
        str(tiny_models["fastpitch"]), {"vocoder": str(tiny_models["hifigan"]), "device": "cuda"}
    )
    asyncio.run(backend.warmup())

    async def synthesize() -> list[Any]:
        return [chunk async for chunk in backend.synthesize("Hello there. How are you?", None)]

    chunks = asyncio.run(synthesize())
    assert chunks and all(len(c.pcm16) % 2 == 0 for c in chunks)
    assert sum(c.duration_s for c in chunks) > 0
