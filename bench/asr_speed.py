"""Embedded ASR latency and accuracy, per model and setting, in process (no server).

    python -m bench.asr_speed                       # every setting, both bundled Whisper models
    python -m bench.asr_speed --models whisper-base --settings default "30s window (old)" --repeats 5

The sentences in :data:`SENTENCES` are spoken by the bundled Piper voice with its noise
turned off (so the audio is the same on every run), trimmed, and given 0.3 s of silence
before and 0.5 s after, as the Ingress sends them (prefix padding, then the endpointing
silence), at 16 kHz. Every setting transcribes every sentence ``--repeats`` times, settings
interleaved, so that load from other processes spreads over all of them. Printed: a table
per model with the median, p90 and max latency per utterance (ms), the word error rate over
all sentences and how many short-window decodes fell back to the full window, then the
cost of each stage (features, encoder on both windows, decoder), then every wrong
transcript. ``--out`` also writes the figures as JSON (:class:`AsrSpeedReport`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from bench.wer import word_error_rate, word_errors
from serve_app.engine.audio.pcm import resample_pcm16, trim_silence

RATE = 16_000
LEAD_S, TRAIL_S = 0.3, 0.5
# Plain words, no digits: Whisper writes "ten" as "10", which a word-level WER would count.
SENTENCES: tuple[str, ...] = (
    "What is the capital of France?",
    "Can you recommend a good book for a long train ride?",
    "How many minutes are there in a day?",
    "Please turn off the lights in the kitchen.",
    "What's the weather going to be like tomorrow morning?",
    "Tell me a joke about computers.",
    "Who wrote the novel Pride and Prejudice?",
    "I would like to order a large pizza with mushrooms.",
    "Remind me to call my mother this evening.",
    "Hello there.",
    "Yes.",
    "Okay.",
    # Two long ones (about 11 s with the silence), where a window shorter than 30 s can
    # change a word.
    "I am writing a short story about a lighthouse keeper who finds a message in a bottle. "
    "Can you suggest a surprising ending, something that readers would not expect, "
    "but that still feels natural and satisfying?",
    "Yesterday I tried to bake bread for the first time. The dough did not rise very much, "
    "and the loaf came out dense and heavy. What might have gone wrong, and what should I "
    "change when I try again this weekend?",
)
MODELS = ("whisper-base", "whisper-tiny-en")

# name -> FasterWhisperASR options, or a faster-whisper transcribe() call (see _RAW).
SETTINGS: dict[str, dict[str, Any]] = {
    "30s window (old)": {"short_window_s": None},
    "30s, chunk_length=10": {"short_window_s": None, "_raw": {"chunk_length": 10}},
    "30s, temperature=0 only": {"short_window_s": None, "_raw": {"temperature": 0.0}},
    "30s, vad_filter": {"vad_filter": True},
    "30s, direct encode+generate": {"short_window_s": 30.0},
    "short window 6s": {"short_window_s": 6.0},
    "short window 8s": {"short_window_s": 8.0},
    "default (short window 10s)": {},
    "short window 15s": {"short_window_s": 15.0},
    "default, max audio 8s": {"short_window_max_audio_s": 8.0},
    "default, cpu_threads=1": {"cpu_threads": 1},
    "default, int8_float32": {"compute_type": "int8_float32"},
    "default, float32": {"compute_type": "float32"},
}
_RAW = "_raw"


async def speak(sentences: Sequence[str]) -> list[bytes]:
    """Each sentence spoken by the bundled Piper voice: PCM16 at 16 kHz with silence around it."""
    from deployments.backends.piper_tts import PiperTTS

    tts = PiperTTS(None, {"noise_scale": 0.0, "noise_w_scale": 0.0})  # deterministic audio
    spoken = []
    for sentence in sentences:
        pcm = b"".join([c.pcm16 async for c in tts.synthesize(sentence, None)])
        pcm = resample_pcm16(trim_silence(pcm, tts.sample_rate), tts.sample_rate, RATE)
        spoken.append(bytes(2 * round(LEAD_S * RATE)) + pcm + bytes(2 * round(TRAIL_S * RATE)))
    return spoken


@dataclass
class Run:
    """One (model, setting) under test and what it measured."""

    model: str
    setting: str
    call: Callable[[bytes], str]
    backend: Any
    latencies_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    fell_back: set[str] = field(default_factory=set)


class RowReport(BaseModel):
    """The figures of one (model, setting)."""

    model: str
    setting: str
    options: dict[str, Any]
    median_ms: float
    p90_ms: float
    max_ms: float
    wer: float
    fallbacks: int
    short_window_decodes: int
    wrong: list[tuple[str, str]]
    fell_back: list[str]


class AsrSpeedReport(BaseModel):
    """Everything one run measured."""

    machine: str
    cpu_count: int | None
    load_average_before: list[float]
    load_average_after: list[float]
    repeats: int
    sentences: list[str]
    audio_s: list[float]
    rows: list[RowReport]
    stages_ms: dict[str, dict[str, float]]


def make_run(model: str, setting: str) -> Run:
    """Load the backend of one (model, setting) and the function that transcribes with it."""
    from deployments.backends.faster_whisper_asr import FasterWhisperASR

    options = {k: v for k, v in SETTINGS[setting].items() if k != _RAW}
    backend = FasterWhisperASR(f"bundled:{model}", options)
    raw = SETTINGS[setting].get(_RAW)
    if raw is None:

        def call(pcm: bytes) -> str:
            return backend._transcribe(pcm, RATE, "en").text

    else:
        # A faster-whisper transcribe() call with one argument changed from the old path.
        kwargs = {"beam_size": 1, "without_timestamps": True, "condition_on_previous_text": False, **raw}

        def call(pcm: bytes) -> str:
            audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            segments, _ = backend._model.transcribe(audio, language="en", **kwargs)
            return "".join(s.text for s in segments).strip()

    return Run(model, setting, call, backend)


def stage_costs(backend: Any, spoken: Sequence[bytes], window_s: float = 10.0) -> dict[str, float]:
    """Median ms over the sentences of each stage of a transcription, on ``backend``'s model."""
    from faster_whisper.tokenizer import Tokenizer

    model = backend._model
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    costs: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        costs.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return out

    for pcm in spoken:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        features = timed("features (numpy STFT)", lambda a=audio: model.feature_extractor(a)[:, :-1])
        frames = features.shape[-1]
        full = np.zeros((features.shape[0], 3000), dtype=np.float32)
        full[:, :frames] = features
        short = full[:, : max(int(window_s * 100), frames + 200 + frames % 2)]
        timed("encoder, 30 s window", lambda f=full: model.encode(f))
        encoded = timed(f"encoder, {window_s:g} s window", lambda f=short: model.encode(f))
        timed(
            "decoder (greedy)",
            lambda e=encoded: model.model.generate(e, [prompt], beam_size=1, max_length=len(prompt) + 100),
        )
    return {name: statistics.median(values) for name, values in costs.items()}


def _table(model: str, rows: list[RowReport]) -> str:
    width = max(len(r.setting) for r in rows) + 2
    head = f"{model}: latency per utterance (ms), WER over all sentences, short-window fallbacks"
    lines = [head, f"{'setting':<{width}}{'median':>8}{'p90':>8}{'max':>8}{'WER %':>8}{'fallbk':>9}"]
    for r in rows:
        fallbacks = f"{r.fallbacks}/{r.short_window_decodes}" if r.short_window_decodes else "-"
        lines.append(
            f"{r.setting:<{width}}{r.median_ms:>8.0f}{r.p90_ms:>8.0f}{r.max_ms:>8.0f}"
            f"{100 * r.wer:>8.1f}{fallbacks:>9}"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> AsrSpeedReport:
    """Synthesize, load every (model, setting), measure interleaved, and summarize."""
    from deployments.backends.faster_whisper_asr import FasterWhisperASR

    print(f"speaking {len(SENTENCES)} sentences with Piper ...", file=sys.stderr)
    spoken = await speak(SENTENCES)
    load_before = list(os.getloadavg())
    runs = [make_run(m, s) for m in args.models for s in args.settings]
    for r in runs:  # unmeasured: the first call of a model pays for allocations
        await r.backend.warmup()
        r.call(spoken[0])
    baseline = {id(r): dict(r.backend.stats()) for r in runs}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats} ...", file=sys.stderr)
        for r in runs:
            for sentence, pcm in zip(SENTENCES, spoken, strict=True):
                fallbacks = r.backend.stats()["short_window_fallbacks"]
                started = time.perf_counter()
                text = r.call(pcm)
                r.latencies_s.append(time.perf_counter() - started)
                r.texts.append(text)
                if r.backend.stats()["short_window_fallbacks"] > fallbacks:
                    r.fell_back.add(sentence)
    rows = []
    for r in runs:
        ms = sorted(1000 * s for s in r.latencies_s)
        refs = list(SENTENCES) * args.repeats
        stats, before = r.backend.stats(), baseline[id(r)]
        wrong = sorted({(ref, hyp) for ref, hyp in zip(refs, r.texts, strict=True) if word_errors(ref, hyp)})
        rows.append(
            RowReport(
                model=r.model,
                setting=r.setting,
                options=SETTINGS[r.setting],
                median_ms=statistics.median(ms),
                p90_ms=ms[min(len(ms) - 1, int(0.9 * len(ms)))],
                max_ms=ms[-1],
                wer=word_error_rate(refs, r.texts),
                fallbacks=stats["short_window_fallbacks"] - before["short_window_fallbacks"],
                short_window_decodes=stats["short_window_transcriptions"]
                - before["short_window_transcriptions"],
                wrong=wrong,
                fell_back=sorted(r.fell_back),
            )
        )
    stages = {m: stage_costs(FasterWhisperASR(f"bundled:{m}"), spoken) for m in args.models}
    return AsrSpeedReport(
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpu_count=os.cpu_count(),
        load_average_before=load_before,
        load_average_after=list(os.getloadavg()),
        repeats=args.repeats,
        sentences=list(SENTENCES),
        audio_s=[len(p) / 2 / RATE for p in spoken],
        rows=rows,
        stages_ms=stages,
    )


def print_report(report: AsrSpeedReport) -> None:
    """The tables on stdout."""
    audio = report.audio_s
    print(
        f"{len(report.sentences)} utterances of {min(audio):.1f}-{max(audio):.1f} s "
        f"(median {statistics.median(audio):.1f} s, with {LEAD_S} s + {TRAIL_S} s silence), "
        f"{report.repeats} repeats; load average {report.load_average_before[0]:.2f} before, "
        f"{report.load_average_after[0]:.2f} after, {report.cpu_count} CPUs\n"
    )
    for model in dict.fromkeys(r.model for r in report.rows):
        print(_table(model, [r for r in report.rows if r.model == model]) + "\n")
    for model, stages in report.stages_ms.items():
        print(f"{model}: median cost of each stage (ms)")
        for name, ms in stages.items():
            print(f"  {name:<28}{ms:>8.1f}")
        print()
    for r in report.rows:
        for ref, hyp in r.wrong:
            print(f"wrong     {r.model} / {r.setting}: {ref!r} -> {hyp!r}")
    for r in report.rows:
        if r.fell_back:
            print(f"fell back {r.model} / {r.setting}: {', '.join(repr(s[:40]) for s in r.fell_back)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="bundled model names")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3, help="passes over the sentences")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
