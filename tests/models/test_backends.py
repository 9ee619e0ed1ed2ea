"""The real embedded CPU backends: Piper -> Whisper round trip, llama.cpp streaming and abort.

Timings are printed (run with ``-s``) but never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.wer import describe_errors, word_error_rate
from deployments import models
from deployments.types import AudioChunk, ChatMessage, SamplingParams
from tests.conftest import ASR_MAX_WER, ASR_SENTENCES, QUESTION_TEXT

pytestmark = pytest.mark.models

LONG_TEXT = " ".join(
    [
        "The weather today is calm and clear.",
        "A light breeze is coming from the west.",
        "Later this afternoon the clouds will gather.",
        "By the evening there may be a little rain.",
        "Tomorrow morning will be cold and bright.",
        "The weekend looks warm and sunny again.",
        "Next week brings a return of the wind.",
        "That is all for this weather report.",
    ]
)
N_SENTENCES = 8


async def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_bundled_models_match_their_pinned_checksums() -> None:
    """Hash every assembled file afresh (not via the stamp) against the pinned sha256."""
    for model in models.list_bundled():
        path = models.resolve_model(f"bundled:{model.name}")
        model_dir = path if path.is_dir() else path.parent
        for mf in model.files:
            assert models._sha256_file(model_dir / mf.name) == mf.sha256, f"{model.name}/{mf.name}"


async def test_piper_speech_is_transcribed_by_whisper(piper_tts: Any, whisper_asr: Any) -> None:
    """Piper's speech, straight from the backend at 22.05 kHz, is what Whisper hears.

    Several sentences within a word error rate, not one exact word: on this very audio,
    Whisper base hears "What is the capital of friends?" on some x86 CPUs.
    """
    heard = []
    for text in ASR_SENTENCES:
        started = time.perf_counter()
        first_chunk_s = None
        chunks: list[AudioChunk] = []
        async for chunk in piper_tts.synthesize(text, "joe"):
            first_chunk_s = first_chunk_s or time.perf_counter() - started
            chunks.append(chunk)
        assert {c.sample_rate for c in chunks} == {22050}
        pcm = b"".join(c.pcm16 for c in chunks)
        transcript = await whisper_asr.transcribe(pcm, 22050, "en")
        print(
            f"\nMEASURED tts first chunk {first_chunk_s:.3f}s; asr {transcript.processing_s:.3f}s "
            f"for {transcript.audio_duration_s:.2f}s of audio: {transcript.text!r}"
        )
        assert transcript.language == "en"
        assert transcript.audio_duration_s == pytest.approx(len(pcm) / 2 / 22050)
        heard.append(transcript.text)
    wer = word_error_rate(ASR_SENTENCES, heard)
    assert wer <= ASR_MAX_WER, describe_errors(ASR_SENTENCES, heard)


async def test_asr_resamples_realtime_api_audio(
    whisper_asr: Any, question_wav: Path, make_utterance: Callable[..., bytes]
) -> None:
    """24 kHz is what Realtime API clients send; the backend resamples it to 16 kHz itself."""
    with wave.open(str(question_wav), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        utterances = [wav.readframes(wav.getnframes())]  # QUESTION_TEXT, the fixture file
    utterances += [make_utterance(text, 24000, 0.3, 0.8) for text in ASR_SENTENCES[1:]]
    heard = []
    for pcm in utterances:
        transcript = await whisper_asr.transcribe(pcm, 24000, None)  # language detected
        assert transcript.language == "en", transcript
        assert transcript.audio_duration_s == pytest.approx(len(pcm) / 2 / 24000)
        heard.append(transcript.text)
    assert ASR_SENTENCES[0] == QUESTION_TEXT
    wer = word_error_rate(ASR_SENTENCES, heard)
    assert wer <= ASR_MAX_WER, describe_errors(ASR_SENTENCES, heard)


async def test_piper_streams_chunks_before_the_text_is_synthesised(piper_tts: Any) -> None:
    before = piper_tts.stats()["sentences_synthesized"]
    sentences_at_first_chunk = None
    chunks: list[AudioChunk] = []
    started = time.perf_counter()
    async for chunk in piper_tts.synthesize(LONG_TEXT, "alloy"):  # unknown voice: the default
        if sentences_at_first_chunk is None:
            sentences_at_first_chunk = piper_tts.stats()["sentences_synthesized"] - before
            first_s = time.perf_counter() - started
        chunks.append(chunk)
    total_s = time.perf_counter() - started
    audio_s = sum(c.duration_s for c in chunks)
    print(
        f"\nMEASURED tts {N_SENTENCES} sentences: first chunk {first_s:.3f}s, "
        f"all {total_s:.3f}s for {audio_s:.1f}s of audio"
    )
    assert piper_tts.stats()["sentences_synthesized"] - before == N_SENTENCES
    assert sentences_at_first_chunk is not None and sentences_at_first_chunk < N_SENTENCES
    # chunk_ms=200: every chunk is at most 200 ms, so a long text arrives in many pieces.
    assert all(c.duration_s <= 0.2 + 1e-6 for c in chunks)
    assert len(chunks) >= sum(c.duration_s for c in chunks) / 0.2


async def test_piper_stops_between_sentences_when_closed(piper_tts: Any) -> None:
    before = piper_tts.stats()
    stream = piper_tts.synthesize(LONG_TEXT, None)
    await anext(stream)
    await stream.aclose()
    await _wait_for(lambda: piper_tts.stats()["active_syntheses"] == 0)
    after = piper_tts.stats()
    assert after["aborted_syntheses"] == before["aborted_syntheses"] + 1
    assert after["sentences_synthesized"] - before["sentences_synthesized"] < N_SENTENCES


def _question(text: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are a helpful voice assistant. Answer briefly."),
        ChatMessage(role="user", content=text),
    ]


async def test_llama_streams_several_deltas(llama_llm: Any) -> None:
    started = time.perf_counter()
    stamps: list[float] = []
    deltas: list[str] = []
    async for delta in llama_llm.chat(
        _question("What is the capital of France?"), SamplingParams(max_tokens=24, temperature=0.0)
    ):
        stamps.append(time.perf_counter() - started)
        deltas.append(delta)
    assert len(deltas) >= 3
    assert "Paris" in "".join(deltas)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    print(f"\nMEASURED llm first token {stamps[0]:.3f}s, {rate:.1f} tok/s: {''.join(deltas)!r}")
    assert llama_llm.stats()["active_generations"] == 0


async def test_llama_closing_the_stream_stops_generation(llama_llm: Any) -> None:
    before = llama_llm.stats()
    stream = llama_llm.chat(
        _question("Tell me a very long story about a dragon."), SamplingParams(max_tokens=300)
    )
    await anext(stream)
    await stream.aclose()
    await _wait_for(lambda: llama_llm.stats()["active_generations"] == 0)
    stopped = llama_llm.stats()
    await asyncio.sleep(0.5)
    assert llama_llm.stats()["tokens_generated"] == stopped["tokens_generated"], "generation went on"
    assert stopped["aborted_generations"] == before["aborted_generations"] + 1
    assert stopped["tokens_generated"] - before["tokens_generated"] < 20  # of max_tokens=300
    # The context is usable again right after an abort.
    reply = [d async for d in llama_llm.chat(_question("Say hello."), SamplingParams(max_tokens=8))]
    assert reply


async def test_llama_cancelling_the_consumer_stops_generation(llama_llm: Any) -> None:
    before = llama_llm.stats()
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in llama_llm.chat(_question("Count slowly from one to two hundred."), SamplingParams()):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_for(lambda: llama_llm.stats()["active_generations"] == 0)
    after = llama_llm.stats()
    assert after["aborted_generations"] == before["aborted_generations"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < SamplingParams().max_tokens
