"""NeMo speaker embeddings through the real engine: a tiny random TitaNet-like model in ``NemoSpeaker``.

The model has TitaNet's design (``EncDecSpeakerLabelModel``: mel features, a ``ConvASREncoder``
of separable convolutions with squeeze-and-excitation, attentive statistics pooling in a
``SpeakerDecoder``) at a few thousand random weights, saved as a ``.nemo`` file and loaded as
the production model is. Random weights say nothing about voices, so the tests check the
window layout, unit length, batching and resampling. Skipped without NeMo; failed without it
when ``VOXRAY_REQUIRE_ENGINES`` names ``nemo``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engines import require_engine

require_engine("nemo", "nemo.collections.asr")

from deployments.backends.nemo_speaker import NemoSpeaker  # noqa: E402
from serve_app.engine.audio.pcm import float32_to_pcm16, resample_pcm16  # noqa: E402

pytestmark = pytest.mark.models

RATE = 16_000
EMBEDDING = 8
_FEATURES = 16


def _block(filters: int, repeat: int, kernel: int, residual: bool) -> dict[str, Any]:
    """One TitaNet encoder block: separable 1-D convolutions with squeeze-and-excitation."""
    return {
        "filters": filters,
        "repeat": repeat,
        "kernel": [kernel],
        "stride": [1],
        "dilation": [1],
        "dropout": 0.0,
        "residual": residual,
        "separable": True,
        "se": True,
        "se_context_size": -1,
    }


def build_tiny_titanet(path: Path) -> Path:
    """A TitaNet-shaped ``EncDecSpeakerLabelModel`` with random weights, saved to ``path``."""
    import torch
    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from omegaconf import OmegaConf

    torch.manual_seed(1234)
    cfg = OmegaConf.create(
        {
            "sample_rate": RATE,
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": RATE,
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "features": _FEATURES,
                "n_fft": 512,
                "dither": 0.0,  # TitaNet dithers a little; none keeps the tests exact
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConvASREncoder",
                "feat_in": _FEATURES,
                "activation": "relu",
                "conv_mask": True,
                "jasper": [_block(16, 1, 3, False), _block(16, 2, 7, True), _block(32, 1, 1, False)],
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
                "feat_in": 32,
                "num_classes": 4,
                "pool_mode": "attention",
                "emb_sizes": EMBEDDING,
            },
            "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss"},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    EncDecSpeakerLabelModel(cfg=cfg).save_to(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_titanet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a ``.nemo`` file."""
    return build_tiny_titanet(tmp_path_factory.mktemp("nemo-speaker") / "tiny-titanet.nemo")


@pytest.fixture(scope="module")
def nemo_speaker(tiny_titanet: Path) -> NemoSpeaker:
    """``NemoSpeaker`` on the CPU with the tiny model, warmed up."""
    backend = NemoSpeaker(str(tiny_titanet), {"device": "auto"})  # auto is the CPU here
    asyncio.run(backend.warmup())
    return backend


def _noisy_tones(seconds: float, seed: int = 0) -> np.ndarray:
    """Something with structure for the random model to embed: tones that change over time."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    pitch = 150 + 100 * np.sin(2 * np.pi * 0.3 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE) + rng.normal(0, 0.02, t.size)).astype(
        np.float32
    )


def test_windows_cover_the_audio_with_unit_vectors(nemo_speaker: NemoSpeaker) -> None:
    assert nemo_speaker.device == "cpu" and nemo_speaker.sample_rate == RATE
    result = asyncio.run(nemo_speaker.embed(float32_to_pcm16(_noisy_tones(4.05)), RATE))
    # 1.5 s windows every 0.4 s from 0 to 2.4 s, plus one ending with the audio.
    assert result.starts_s == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.55])
    assert result.ends_s == pytest.approx([s + 1.5 for s in result.starts_s])
    vectors = np.array(result.vectors)
    assert vectors.shape == (8, EMBEDDING)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in vectors}) > 1  # the windows differ


def test_short_audio_gets_one_window_and_too_short_none(nemo_speaker: NemoSpeaker) -> None:
    one = asyncio.run(nemo_speaker.embed(float32_to_pcm16(_noisy_tones(0.8)), RATE))
    assert one.starts_s == [0.0] and one.ends_s == pytest.approx([0.8])
    assert asyncio.run(nemo_speaker.embed(float32_to_pcm16(_noisy_tones(0.3)), RATE)).vectors == []
    assert asyncio.run(nemo_speaker.embed(b"", RATE)).vectors == []


def test_small_batches_give_the_same_vectors_as_one_batch(
    tiny_titanet: Path, nemo_speaker: NemoSpeaker
) -> None:
    audio = _noisy_tones(3.0, seed=1)
    whole = nemo_speaker.embed_audio(audio)
    small = NemoSpeaker(str(tiny_titanet), {"device": "cpu", "max_batch_size": 2})
    before = small.stats()["forward_passes"]
    pieces = small.embed_audio(audio)
    assert small.stats()["forward_passes"] - before == (len(whole.vectors) + 1) // 2
    np.testing.assert_allclose(np.array(pieces.vectors), np.array(whole.vectors), atol=1e-5)
    # And a window embedded on its own is the same as inside the batch.
    alone = nemo_speaker.embed_audio(audio[int(0.4 * RATE) : int(1.9 * RATE)])
    np.testing.assert_allclose(alone.vectors[0], whole.vectors[1], atol=1e-5)


def test_other_rates_are_resampled_to_the_models(nemo_speaker: NemoSpeaker) -> None:
    pcm16 = float32_to_pcm16(_noisy_tones(3.0, seed=2))
    at_24k = asyncio.run(nemo_speaker.embed(resample_pcm16(pcm16, RATE, 24_000), 24_000))
    at_16k = asyncio.run(nemo_speaker.embed(pcm16, RATE))
    assert at_24k.starts_s == at_16k.starts_s
    similarity = np.sum(np.array(at_24k.vectors) * np.array(at_16k.vectors), axis=1)
    assert similarity.min() > 0.99  # the same sound, up to the resampler's filtering
    assert nemo_speaker.stats()["calls"] >= 2
