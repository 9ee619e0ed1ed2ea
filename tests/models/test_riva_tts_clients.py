"""NVIDIA's own ``talk.py``, unmodified, against voxray's Riva synthesis on the embedded Piper voice.

``talk.py`` runs in the client venvs of ``tests/riva_clients.py``: with ``nvidia-riva-client``
2.28.0 (``SynthesizeOnline`` bidirectional) and 2.24.0 (server-streaming), with ``--stream``
and without (``Synthesize``), at 16 and 44.1 kHz, against ``configs/local.yaml`` behind HAProxy.
``talk.py`` exits 0 even after an error, so each run is judged by its WAV: the requested rate,
a plausible length, and speech that Whisper base (the ``whisper_asr`` fixture, in this process)
transcribes back within a WER bound over all sentences; no single word is asserted, since
int8 inference differs between CPUs. The time to first audio of ``SynthesizeOnline`` on this
voice is measured with voxray's own stubs and printed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.wer import describe_errors, word_error_rate
from serve_app.engine.audio.pcm import resample_pcm16
from serve_app.protocols.grpc_api.proto import riva_audio_pb2, riva_tts_pb2, riva_tts_pb2_grpc
from tests.grpc_harness import channel
from tests.riva_clients import RivaRun, Venv, require_riva_clients, talk
from tests.serve.haproxy_server import HAProxyServer

pytestmark = pytest.mark.models

SENTENCES = (
    "The library closes at six o'clock on Saturdays.",
    "Please remind me to call my sister this evening.",
    "We watched the sunset from the top of the hill.",
)
MODES: tuple[tuple[Venv, bool, int], ...] = (
    ("new", True, 16_000),
    ("new", True, 44_100),
    ("old", True, 16_000),
    ("old", True, 44_100),
    ("new", False, 44_100),
    ("old", False, 16_000),
)
"""``(client venv, --stream, --sample-rate-hz)``: both clients, both calls, both rates."""
MAX_WER = 0.15
"""Over every sentence of every mode; Whisper base hears the Piper voice well."""
FIRST_AUDIO_RUNS = 7
MAX_FIRST_AUDIO_S = 2.0
"""Median time to first audio of SynthesizeOnline on loopback: Piper's first sentence on the CPU."""
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def port(grpc_models_server: HAProxyServer) -> int:
    require_riva_clients()
    return int(grpc_models_server.grpc_target.rpartition(":")[2])


def heard(whisper_asr: Any, run: RivaRun) -> str:
    """What Whisper hears in the WAV a run wrote (resampled to 16 kHz)."""
    pcm = resample_pcm16(run.audio, run.sample_rate, 16_000)
    return asyncio.run(whisper_asr.transcribe(pcm, 16_000, "en")).text


def test_talk_py_speaks_with_both_clients_both_calls_and_both_rates(
    port: int, whisper_asr: Any, tmp_path: Path
) -> None:
    references: list[str] = []
    hypotheses: list[str] = []
    for venv, stream, rate in MODES:
        flags = ["--sample-rate-hz", str(rate), *(["--stream"] if stream else [])]
        for index, text in enumerate(SENTENCES):
            run = talk(port, text, tmp_path / f"{venv}-{stream}-{rate}-{index}.wav", *flags, venv=venv)
            run.assert_ok()  # exit 0 and audio in the WAV
            label = f"{venv} stream={stream} {rate} Hz: {text}"
            assert run.sample_rate == rate, label
            seconds = len(run.audio) / 2 / rate
            assert 1.0 < seconds < 8.0, f"{label}: {seconds:.2f} s of audio"
            marker = "Time to first audio" if stream else "Time spent"
            assert marker in run.stdout, f"{label}\n{run.describe()}"
            references.append(text)
            hypotheses.append(heard(whisper_asr, run))
    wer = word_error_rate(references, hypotheses)
    print(f"talk.py over {len(references)} runs: WER {wer:.3f}")
    assert wer <= MAX_WER, describe_errors(references, hypotheses)


def test_talk_py_names_the_voice_it_lists(port: int, tmp_path: Path) -> None:
    listing = talk(port, None, tmp_path / "unused.wav", "--list-voices")
    listing.assert_ok()
    voices = json.loads(listing.stdout[listing.stdout.index("{") :])
    assert voices == {"en-US": {"voices": ["English-US.joe"]}}
    named = talk(port, "Hello from the listed voice.", tmp_path / "named.wav", "--voice", "English-US.joe")
    named.assert_ok()
    unknown = talk(port, "Hello.", tmp_path / "unknown.wav", "--voice", "English-US.Female-1", "--stream")
    assert unknown.returncode == 0 and not unknown.audio  # talk.py prints the error and exits 0
    assert "Unknown voice_name 'English-US.Female-1'" in unknown.stdout and "English-US.joe" in unknown.stdout


def test_time_to_first_audio_of_synthesize_online(grpc_models_server: HAProxyServer) -> None:
    request = riva_tts_pb2.SynthesizeSpeechRequest(
        text="Here is the first sentence of the answer. And here is a second one, a little longer.",
        language_code="en-US",
        encoding=riva_audio_pb2.AudioEncoding.LINEAR_PCM,
        sample_rate_hz=16_000,
    )
    waits: list[float] = []
    with channel(grpc_models_server.grpc_target) as opened:
        grpc.channel_ready_future(opened).result(timeout=TIMEOUT_S)
        stub = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(opened)
        list(stub.SynthesizeOnline(iter([request]), timeout=TIMEOUT_S))  # warm the path and the voice
        for _ in range(FIRST_AUDIO_RUNS):
            started = time.perf_counter()
            replies = stub.SynthesizeOnline(iter([request]), timeout=TIMEOUT_S)
            first = next(replies)
            waits.append(time.perf_counter() - started)
            rest = list(replies)
            assert first.audio and sum(len(r.audio) for r in rest) > len(first.audio)  # streamed in pieces
    median = statistics.median(waits)
    print(f"SynthesizeOnline time to first audio on Piper: median {median * 1000:.0f} ms of {waits}")
    assert median < MAX_FIRST_AUDIO_S
