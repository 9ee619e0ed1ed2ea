"""NeMo ASR through the real engine: tiny CTC and TDT models loaded and run by ``NemoASR``.

The tiny models (``tests/nemo_tiny.py``) go through the path that serves Parakeet: a
``.nemo`` file restored by ``ASRModel`` and transcribed with ``ASRModel.transcribe``. Their
weights are random, so they transcribe noise; the tests check order, batching and
resampling, and compare each result with the same utterance transcribed on its own. The
Serve test deploys the TDT model, Parakeet-TDT's decoder family. Skipped without NeMo;
failed without it when ``VOXRAY_REQUIRE_ENGINES`` names ``nemo``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engines import require_engine

require_engine("nemo", "nemo.collections.asr")

from deployments.backends.nemo_asr import NemoASR, load_nemo_model, nemo_source  # noqa: E402
from serve_app.config import ASRConfig  # noqa: E402
from tests.conftest import PHRASES  # noqa: E402
from tests.nemo_tiny import ASR_RATE, build_tiny_ctc, build_tiny_tdt  # noqa: E402

pytestmark = pytest.mark.models

APP = "nemo-asr"
CLIENT_RATE = 24_000  # what Realtime API clients send; the model wants 16 kHz
N_CONCURRENT = 6


@pytest.fixture(scope="session")
def tiny_asr_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny models as ``.nemo`` files (one per directory), built once per test session."""
    root = tmp_path_factory.mktemp("nemo-asr")
    return {
        "ctc": build_tiny_ctc(root / "ctc" / "tiny-ctc.nemo"),
        "tdt": build_tiny_tdt(root / "tdt" / "tiny-tdt.nemo"),
    }


def _ready(path: Path) -> NemoASR:
    backend = NemoASR(str(path), {"device": "auto"})  # auto is the CPU here
    asyncio.run(backend.warmup())
    return backend


@pytest.fixture(scope="module", params=["ctc", "tdt"])
def nemo_asr(request: pytest.FixtureRequest, tiny_asr_paths: dict[str, Path]) -> NemoASR:
    """``NemoASR`` on the CPU with each tiny model, warmed up."""
    return _ready(tiny_asr_paths[request.param])


@pytest.fixture(scope="module")
def tdt_asr(tiny_asr_paths: dict[str, Path]) -> NemoASR:
    """``NemoASR`` with the tiny TDT model: the reference for the deployment's results."""
    return _ready(tiny_asr_paths["tdt"])


@pytest.fixture(scope="module")
def utterances(make_utterance: Callable[..., bytes]) -> list[bytes]:
    """Real speech of different lengths at 24 kHz (0.5 s silence before, 1 s after)."""
    return [make_utterance(text, rate=CLIENT_RATE) for text in PHRASES.values()]


def test_the_model_class_comes_from_the_checkpoint(tiny_asr_paths: dict[str, Path]) -> None:
    from nemo.collections.asr.models import ASRModel, EncDecCTCModel, EncDecRNNTModel

    for kind, cls in (("ctc", EncDecCTCModel), ("tdt", EncDecRNNTModel)):
        directory = str(tiny_asr_paths[kind].parent)  # a directory holding one .nemo file
        assert nemo_source(directory) == ("restore_from", str(tiny_asr_paths[kind]))
        assert type(load_nemo_model(ASRModel, directory, "cpu")) is cls


def test_backend_reads_the_model_rate_and_resamples_to_it(nemo_asr: NemoASR, utterances: list[bytes]) -> None:
    assert nemo_asr.device == "cpu"
    assert nemo_asr.sample_rate == ASR_RATE
    pcm = utterances[0]
    samples = nemo_asr._model_audio(pcm, CLIENT_RATE)
    assert samples.dtype.name == "float32"
    assert len(samples) == pytest.approx(len(pcm) // 2 * ASR_RATE / CLIENT_RATE, abs=2)


async def test_a_batch_is_one_model_call_with_one_transcript_per_input_in_order(
    nemo_asr: NemoASR, utterances: list[bytes]
) -> None:
    alone = [await nemo_asr.transcribe(pcm, CLIENT_RATE, "en") for pcm in utterances]
    texts = [t.text for t in alone]
    assert all(texts) and len(set(texts)) == len(texts), texts  # distinct, so order shows

    before = nemo_asr.stats()
    # Reversed and with an empty utterance in the middle: results must follow the input.
    items = [(pcm, CLIENT_RATE, "en") for pcm in reversed(utterances)]
    items.insert(1, (b"", CLIENT_RATE, "en"))
    batch = await nemo_asr.transcribe_batch(items)
    after = nemo_asr.stats()

    assert [t.text for t in batch] == [texts[2], "", texts[1], texts[0]]
    assert [t.audio_duration_s for t in batch] == [len(pcm) / 2 / CLIENT_RATE for pcm, _, _ in items]
    assert {t.language for t in batch} == {"en"}
    assert after["batches"] == before["batches"] + 1  # one model.transcribe call ...
    assert after["utterances"] == before["utterances"] + len(utterances)  # ... the empty one skipped
    assert after["last_batch_size"] == len(utterances)
    assert after["largest_batch"] >= len(utterances)
    assert after["active_batches"] == 0


async def test_empty_input_costs_no_model_call(nemo_asr: NemoASR) -> None:
    before = nemo_asr.stats()["batches"]
    assert await nemo_asr.transcribe_batch([]) == []
    transcript = await nemo_asr.transcribe(b"\x01", CLIENT_RATE, None)  # half a sample
    assert (transcript.text, transcript.audio_duration_s) == ("", 0.0)
    assert nemo_asr.stats()["batches"] == before


@pytest.fixture(scope="module")
def asr_handle(serve_instance: str, tiny_asr_paths: dict[str, Path]) -> Iterator[Any]:
    """The real ``ASRDeployment`` with the nemo backend, deployed in Ray Serve."""
    from ray import serve

    from deployments.asr import ASRDeployment

    config = ASRConfig(
        backend="nemo",
        model=str(tiny_asr_paths["tdt"]),
        # A long wait, so that calls sent together surely meet in one batch on a slow CI box.
        options={"device": "cpu", "max_batch_size": 8, "batch_wait_timeout_s": 0.5},
    )
    handle = serve.run(ASRDeployment.bind(config.model_dump()), name=APP, route_prefix=None)
    try:
        yield handle
    finally:
        serve.delete(APP)


async def test_concurrent_calls_share_model_calls_in_the_deployment(
    asr_handle: Any, tdt_asr: NemoASR, utterances: list[bytes]
) -> None:
    # Six callers (sessions), each with its own utterance: the three phrases at two lengths.
    inputs = [*utterances, *(pcm[: len(pcm) // 3 * 2] for pcm in utterances)]
    assert len(inputs) == N_CONCURRENT
    expected = [(await tdt_asr.transcribe(pcm, CLIENT_RATE, None)).text for pcm in inputs]
    assert len(set(expected)) == N_CONCURRENT, expected  # distinct, so a mix-up shows

    before = await asr_handle.stats.remote()
    results = await asyncio.gather(*(asr_handle.transcribe.remote(pcm, CLIENT_RATE, None) for pcm in inputs))
    after = await asr_handle.stats.remote()

    assert [r.text for r in results] == expected  # each caller got its own transcript
    assert [r.audio_duration_s for r in results] == [len(pcm) / 2 / CLIENT_RATE for pcm in inputs]
    calls = after["batches"] - before["batches"]
    print(f"\nMEASURED {N_CONCURRENT} concurrent calls served in {calls} model call(s)")
    assert after["utterances"] - before["utterances"] == N_CONCURRENT
    assert calls < N_CONCURRENT
    assert after["largest_batch"] > 1
