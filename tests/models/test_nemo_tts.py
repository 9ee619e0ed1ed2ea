"""NeMo TTS through the real engine: tiny FastPitch + HiFi-GAN loaded and run by ``NemoTTS``.

The tiny models (``tests/nemo_tiny.py``) go through the path that serves NVIDIA's FastPitch
and HiFi-GAN: ``.nemo`` files restored by ``SpectrogramGenerator`` and ``Vocoder``, then
``parse`` -> ``generate_spectrogram`` -> ``convert_spectrogram_to_audio``. Their weights are
random (the audio is noise), so the tests check streaming, rates, lengths and stopping.
Skipped without NeMo; failed without it when ``VOXRAY_REQUIRE_ENGINES`` names ``nemo``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.engines import require_engine

require_engine("nemo", "nemo.collections.tts")

from deployments.backends.nemo_tts import NemoTTS, split_sentences  # noqa: E402
from deployments.types import AudioChunk  # noqa: E402
from serve_app.config import TTSConfig  # noqa: E402
from tests.nemo_tiny import FRAMES_PER_TOKEN, HOP, TTS_RATE, build_tiny_fastpitch, build_tiny_hifigan  # noqa: E402

pytestmark = pytest.mark.models

APP = "nemo-tts"
CHUNK_MS = 100
THREE_SENTENCES = "Hello there. How are you today? The weather is calm and clear."
# The tiny models synthesise a sentence in about 10 ms on a CPU: a reply has to be this long
# for a stop to land before its end, through Serve too.
N_LONG_SENTENCES = 100
LONG_TEXT = " ".join(f"This is sentence number {n} of a long reply." for n in range(N_LONG_SENTENCES))


@pytest.fixture(scope="session")
def tiny_tts_options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{"model": fastpitch.nemo, "options": {...}}`` for the tiny pair, built once per session."""
    directory = tmp_path_factory.mktemp("nemo-tts")
    fastpitch = build_tiny_fastpitch(directory / "tiny-fastpitch.nemo")
    hifigan = build_tiny_hifigan(directory / "tiny-hifigan.nemo")
    return {"model": str(fastpitch), "options": {"vocoder": str(hifigan), "chunk_ms": CHUNK_MS}}


@pytest.fixture(scope="module")
def nemo_tts(tiny_tts_options: dict[str, Any]) -> NemoTTS:
    """``NemoTTS`` on the CPU with the tiny pair, warmed up."""
    backend = NemoTTS(tiny_tts_options["model"], tiny_tts_options["options"])
    asyncio.run(backend.warmup())
    return backend


async def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_sentences_are_split_after_end_punctuation() -> None:
    assert split_sentences(THREE_SENTENCES) == [
        "Hello there.",
        "How are you today?",
        "The weather is calm and clear.",
    ]
    assert split_sentences("  no end punctuation ") == ["no end punctuation"]
    assert split_sentences(" \n ") == []


async def test_streams_pcm16_chunks_at_the_vocoder_rate(nemo_tts: NemoTTS) -> None:
    assert nemo_tts.device == "cpu" and nemo_tts.sample_rate == TTS_RATE
    before = nemo_tts.stats()
    sentences_at_first_chunk = None
    chunks: list[AudioChunk] = []
    async for chunk in nemo_tts.synthesize(THREE_SENTENCES, "alloy"):  # any voice: this model's
        if sentences_at_first_chunk is None:
            sentences_at_first_chunk = (
                nemo_tts.stats()["sentences_synthesized"] - before["sentences_synthesized"]
            )
        chunks.append(chunk)
    after = nemo_tts.stats()

    assert {c.sample_rate for c in chunks} == {TTS_RATE}
    assert all(len(c.pcm16) % 2 == 0 and c.duration_s <= CHUNK_MS / 1000 + 1e-6 for c in chunks)
    assert after["sentences_synthesized"] - before["sentences_synthesized"] == 3
    assert after["chunks_sent"] - before["chunks_sent"] == len(chunks)
    # The first sentence's audio left before the last sentence was synthesised.
    assert sentences_at_first_chunk is not None and sentences_at_first_chunk < 3
    # Each character (plus a padding space around each sentence) lasts about
    # FRAMES_PER_TOKEN frames of HOP samples: seconds of audio, not a click.
    audio_s = sum(c.duration_s for c in chunks)
    tokens = sum(len(s) + 2 for s in split_sentences(THREE_SENTENCES))
    assert audio_s == pytest.approx(tokens * FRAMES_PER_TOKEN * HOP / TTS_RATE, rel=0.5)
    samples = np.frombuffer(b"".join(c.pcm16 for c in chunks), dtype="<i2")
    assert np.abs(samples).max() > 0  # not silence
    print(f"\nMEASURED tiny NeMo TTS: {audio_s:.2f}s of audio in {len(chunks)} chunks")


async def test_closing_the_stream_stops_before_the_next_sentence(nemo_tts: NemoTTS) -> None:
    before = nemo_tts.stats()
    stream = nemo_tts.synthesize(LONG_TEXT, None)
    await anext(stream)
    await stream.aclose()
    await _wait_for(lambda: nemo_tts.stats()["active_syntheses"] == 0)
    after = nemo_tts.stats()
    assert after["aborted_syntheses"] == before["aborted_syntheses"] + 1
    assert after["sentences_synthesized"] - before["sentences_synthesized"] < N_LONG_SENTENCES


async def test_blank_text_makes_no_audio(nemo_tts: NemoTTS) -> None:
    assert [c async for c in nemo_tts.synthesize("  ", None)] == []


@pytest.fixture(scope="module")
def tts_handle(serve_instance: str, tiny_tts_options: dict[str, Any]) -> Iterator[Any]:
    """The real ``TTSDeployment`` with the nemo backend, deployed in Ray Serve."""
    from ray import serve

    from deployments.tts import TTSDeployment

    config = TTSConfig(backend="nemo", **tiny_tts_options)
    handle = serve.run(TTSDeployment.bind(config.model_dump()), name=APP, route_prefix=None)
    try:
        yield handle
    finally:
        serve.delete(APP)


async def test_deployment_streams_the_same_audio(tts_handle: Any, nemo_tts: NemoTTS) -> None:
    local = [c async for c in nemo_tts.synthesize(THREE_SENTENCES, None)]
    remote = [c async for c in tts_handle.options(stream=True).synthesize.remote(THREE_SENTENCES, None)]
    assert {c.sample_rate for c in remote} == {TTS_RATE}
    assert all(c.duration_s <= CHUNK_MS / 1000 + 1e-6 for c in remote)
    # Same weights, same text: the same length of audio (the samples may differ in the last
    # bits: the replica runs torch with another thread count).
    assert sum(c.duration_s for c in remote) == pytest.approx(sum(c.duration_s for c in local), rel=0.05)


async def test_cancelling_the_deployment_stream_stops_synthesis(tts_handle: Any) -> None:
    before = await tts_handle.stats.remote()
    response = tts_handle.options(stream=True).synthesize.remote(LONG_TEXT, None)
    async for _ in response:
        break
    response.cancel()  # what the Ingress does on barge-in

    deadline = time.monotonic() + 15
    while (stats := await tts_handle.stats.remote())["active_syntheses"] != 0 or stats[
        "aborted_syntheses"
    ] == before["aborted_syntheses"]:
        assert time.monotonic() < deadline, f"synthesis did not stop: {stats}"
        await asyncio.sleep(0.05)
    assert stats["sentences_synthesized"] - before["sentences_synthesized"] < N_LONG_SENTENCES
