"""Runs the real NVIDIA Riva Python client, unmodified, against voxray's Riva gRPC services in tests.

``nvidia-riva-client`` from PyPI in two venvs of its own (``scripts/setup-riva-clients.sh``):

- ``.venv-riva``: 2.28.0, whose ``SynthesizeOnline`` is a bidirectional stream (one request per
  text), with the ``openai`` SDK for ``tests/clients/riva/seed_gateway_calls.py``.
- ``.venv-riva-old``: 2.24.0, the last release whose ``SynthesizeOnline`` is server-streaming
  (as in the 2.16.0 seed 002's gateway locks), with that lock's ``openai`` 2.14.0.

The CLIs are NVIDIA's own scripts (github nvidia-riva/python-clients), vendored unmodified in
``tests/clients/riva/nvidia/`` (see its README): ``transcribe_file.py``,
``riva_streaming_asr_client.py``, ``talk.py``, and for the old venv the ``talk.py`` of the 2.24
era (the newer one passes a list of texts, which 2.24.0's ``synthesize_online`` rejects). They
import PyAudio only for ``--play-audio``, ``--output-device`` and ``--list-devices``: never pass
those. Each run gets a fresh temporary directory as HOME and working directory, and an
environment without the main venv's Python variables (as ``tests/speechmatics_clients.py``).

Every helper connects to ``127.0.0.1:<port>`` on an insecure channel (the clients' default);
``metadata`` pairs go with every call as ``--metadata KEY VALUE``. What each client sends and
needs back is in the helpers' docstrings.

Typical use::

    require_riva_clients()  # skip, or fail under VOXRAY_REQUIRE_ENGINES=riva
    run = transcribe_file(port, Path("question.wav"), "--speaker-diarization")
    run.assert_ok()
    print(run.finals, run.words)
    run = talk(port, "Hello there.", tmp_path / "out.wav", "--stream", "--sample-rate-hz", "16000")
    run.assert_ok()  # also fails when out.wav has no audio: talk.py exits 0 after errors
    run = run_riva_python("import riva.client; print(riva.client.__version__)", venv="old")
    run = seed_gateway_calls(port, wav, llm_url="http://127.0.0.1:8000/v1")  # venv="old" too
    print(run.summary["transcript"], run.summary["answer"], run.summary["audio_bytes"])
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.speechmatics_clients import client_env

REPO_ROOT = Path(__file__).resolve().parent.parent
Venv = Literal["new", "old"]
VENVS: dict[str, Path] = {"new": REPO_ROOT / ".venv-riva", "old": REPO_ROOT / ".venv-riva-old"}
"""``new``: nvidia-riva-client 2.28.0 and openai 3.57.0; ``old``: 2.24.0 and openai 2.14.0."""
CLIENT_VERSIONS = {"new": "2.28.0", "old": "2.24.0"}
CLIENTS_DIR = Path(__file__).resolve().parent / "clients" / "riva"
NVIDIA_DIR = CLIENTS_DIR / "nvidia"
TRANSCRIBE_FILE = NVIDIA_DIR / "transcribe_file.py"
STREAMING_ASR_CLIENT = NVIDIA_DIR / "riva_streaming_asr_client.py"
TALK = {"new": NVIDIA_DIR / "talk.py", "old": NVIDIA_DIR / "r2.24.0" / "talk.py"}
SEED_GATEWAY_CALLS = CLIENTS_DIR / "seed_gateway_calls.py"
SEED_SUMMARY_KEY = "seed_gateway_calls"  # its last stdout line: {"seed_gateway_calls": {...}}
ENGINE_NAME = "riva"
"""Their name in ``VOXRAY_REQUIRE_ENGINES``: listed there, missing clients fail instead of skipping."""
DEFAULT_TIMEOUT_S = 120.0
HOST = "127.0.0.1"


def riva_python(venv: Venv = "new") -> Path:
    """The interpreter of one client venv (``new``: 2.28.0, ``old``: 2.24.0)."""
    return VENVS[venv] / "bin" / "python"


def riva_clients_available() -> bool:
    """Whether ``scripts/setup-riva-clients.sh`` has made both venvs."""
    return all(riva_python(venv).is_file() and os.access(riva_python(venv), os.X_OK) for venv in VENVS)


def require_riva_clients() -> None:
    """Skip the calling test (module) unless both client venvs are installed.

    When ``VOXRAY_REQUIRE_ENGINES`` lists ``riva`` (``scripts/test.sh``, and so CI), missing
    clients fail the test instead, so that run cannot pass by skipping them.

    Raises:
        pytest.skip.Exception: A venv is missing and not required.
        pytest.fail.Exception: A venv is missing but ``VOXRAY_REQUIRE_ENGINES`` requires it.
    """
    from tests.engines import skip_unless_required

    if riva_clients_available():
        return
    message = (
        f"the NVIDIA Riva clients are not installed ({VENVS['new']}, {VENVS['old']}; "
        "run scripts/setup-riva-clients.sh)"
    )
    skip_unless_required(ENGINE_NAME, message)


@dataclass(frozen=True)
class RivaWord:
    """One row of ``print_streaming``'s word table (``--word-time-offsets``/``--speaker-diarization``).

    Attributes:
        word: The word.
        start_ms: ``start_time`` as printed (rounded to a millisecond).
        end_ms: ``end_time``.
        confidence: ``confidence``.
        speaker: ``speaker_tag`` (only printed with ``--speaker-diarization``), else None.
    """

    word: str
    start_ms: int
    end_ms: int
    confidence: float
    speaker: int | None


@dataclass(frozen=True)
class RivaRun:
    """What one run of a client did.

    Attributes:
        args: Its command line.
        returncode: Its exit status; None when it was killed at the timeout.
        stdout: Its standard output.
        stderr: Its standard error (a traceback when a CLI raised).
        elapsed_s: Wall time of the run.
        timed_out: Whether it was killed at the timeout.
        problem: Why the run failed although it exited 0 (``talk.py`` prints the error and
            exits 0; its WAV is then empty), else None.
        files: Text files it wrote in its working directory, by name (``output_0.txt`` of
            ``riva_streaming_asr_client.py``, ``<input>.seglst.json`` of ``--output-seglst``).
        audio: The PCM of the WAV it wrote (``talk``, ``seed_gateway_calls``), else empty.
        sample_rate: That WAV's rate, 0 when none.
        summary: ``seed_gateway_calls.py``'s summary (see its docstring), else empty.
    """

    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    elapsed_s: float
    timed_out: bool = False
    problem: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    audio: bytes = b""
    sample_rate: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether it exited 0 within the timeout and no ``problem`` was found."""
        return self.returncode == 0 and not self.timed_out and self.problem is None

    @property
    def lines(self) -> list[str]:
        """Its stdout (and written ``files``) as lines; ``\\r`` ends a line too (partials on a console)."""
        text = "\n".join([self.stdout, *self.files.values()])
        return [line.rstrip() for line in text.replace("\r", "\n").split("\n") if line.strip()]

    @property
    def finals(self) -> list[str]:
        """The final transcripts ``print_streaming`` printed, in order.

        ``## text`` lines (the default), or ``Time 1.23s: Transcript 0: text`` (with word times,
        diarization, and in ``riva_streaming_asr_client.py``'s output files).
        """
        finals = []
        for line in self.lines:
            if line.startswith("##"):
                finals.append(line.partition(" ")[2].strip())
            elif line.startswith("Time ") and ": Transcript 0: " in line:
                finals.append(line.split(": Transcript 0: ", 1)[1].strip())
        return finals

    @property
    def partials(self) -> list[str]:
        """The interim transcripts printed (``>> text`` with ``--show-intermediate``, or ``>>>Time``)."""
        partials = []
        for line in self.lines:
            if line.startswith(">>>Time "):
                partials.append(line.split(": ", 1)[1].strip() if ": " in line else "")
            elif line.startswith(">> "):
                partials.append(line[3:].strip())
        return partials

    @property
    def words(self) -> list[RivaWord]:
        """The rows of every ``Timestamps:`` table, in order."""
        words, in_table = [], False
        for line in self.lines:
            if line.startswith("Timestamps:"):
                in_table = True
                continue
            if in_table and line.startswith("Word "):
                continue
            parts = line.split()
            try:
                numbers = [float(part) for part in parts[1:]]
            except ValueError:
                in_table = False
                continue
            if in_table and len(parts) in (4, 5):
                speaker = int(numbers[3]) if len(parts) == 5 else None
                words.append(RivaWord(parts[0], int(numbers[0]), int(numbers[1]), numbers[2], speaker))
            else:
                in_table = False
        return words

    def describe(self) -> str:
        """A summary for assertion messages: status, problem, and the ends of its output."""
        status = f"killed after {self.elapsed_s:.1f} s" if self.timed_out else f"exit {self.returncode}"
        return (
            f"{' '.join(self.args[1:3])} {status} in {self.elapsed_s:.2f} s; problem {self.problem}; "
            f"{len(self.finals)} finals, {len(self.audio)} audio bytes; summary error "
            f"{self.summary.get('error')}\n--- stdout ---\n{self.stdout[-3000:]}\n"
            f"--- stderr ---\n{self.stderr[-3000:]}"
        )

    def assert_ok(self) -> None:
        """Fail with the client's output unless it exited 0 in time with no ``problem``."""
        assert self.ok, self.describe()


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", errors="replace")


def _read_wav(path: Path) -> tuple[bytes, int]:
    if not path.is_file() or path.stat().st_size == 0:
        return b"", 0
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.readframes(wav.getnframes()), wav.getframerate()
    except (wave.Error, EOFError):
        return b"", 0


def _run(
    args: list[str],
    timeout_s: float,
    *,
    out_wav: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RivaRun:
    """Run ``args`` in a fresh temporary HOME and working directory; collect what it wrote.

    Args:
        args: The command line.
        timeout_s: Kill it after this long.
        out_wav: A WAV it writes: its PCM lands in ``audio`` and an empty one sets ``problem``.
        env: Variables to add to its environment.
    """
    with tempfile.TemporaryDirectory(prefix="voxray-riva-") as tmp:
        environment = {**client_env(Path(tmp)), **(env or {})}
        started = time.monotonic()
        returncode = None
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=environment,
                cwd=tmp,
                timeout=timeout_s,
            )
            stdout, stderr, returncode = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:  # killed; what it printed until then
            stdout, stderr = expired.stdout, expired.stderr
        elapsed_s = time.monotonic() - started
        files = {
            path.name: path.read_text(errors="replace")
            for path in sorted(Path(tmp).iterdir())
            if path.is_file() and path.suffix in (".txt", ".json")
        }
    audio, rate = _read_wav(out_wav) if out_wav is not None else (b"", 0)
    problem = None
    if out_wav is not None and not audio:
        problem = f"no audio in {out_wav}"
    return RivaRun(
        args=args,
        returncode=returncode,
        stdout=_text(stdout),
        stderr=_text(stderr),
        elapsed_s=elapsed_s,
        timed_out=returncode is None,
        problem=problem,
        files=files,
        audio=audio,
        sample_rate=rate,
    )


def _connection_args(port: int, metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[str]:
    args = ["--server", f"{HOST}:{port}"]
    pairs = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    for key, value in pairs:
        args += ["--metadata", key, value]
    return args


def transcribe_file(
    port: int,
    wav: Path | None,
    *flags: str,
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    venv: Venv = "new",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RivaRun:
    """Run NVIDIA's ``scripts/asr/transcribe_file.py --server 127.0.0.1:PORT --input-file WAV``.

    It calls ``StreamingRecognize``: a ``StreamingRecognitionConfig`` (``interim_results``,
    ``max_alternatives`` 1, ``verbatim_transcripts``, no encoding and no sample rate; with the
    2.28.0 client no ``language_code`` either unless ``--language-code``), then the file in
    1600-frame chunks, the first one starting with the RIFF header, all at once unless
    ``--simulate-realtime``. It prints each final as ``## text`` (``Time ..: Transcript 0:``
    and a word table with ``--word-time-offsets`` or ``--speaker-diarization``) and exits 1 with
    a traceback when the call fails.

    Args:
        port: The server's port on 127.0.0.1.
        wav: The audio file.
        *flags: More options, e.g. ``"--speaker-diarization"``, ``"--show-intermediate"``,
            ``"--language-code", "en-US"``, ``"--simulate-realtime"``, ``"--list-models"``
            (then ``--input-file`` is not passed: give ``wav=None``).
        metadata: Sent with the call (``--metadata KEY VALUE`` each).
        venv: ``new`` (2.28.0) or ``old`` (2.24.0).
        timeout_s: Kill it after this long.

    Returns:
        The run: ``finals``, ``partials`` and ``words`` parse its output.
    """
    args = [str(riva_python(venv)), str(TRANSCRIBE_FILE), *_connection_args(port, metadata)]
    if wav is not None:
        args += ["--input-file", str(Path(wav).resolve())]
    return _run([*args, *flags], timeout_s)


def streaming_asr_client(
    port: int,
    wav: Path,
    *flags: str,
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    venv: Venv = "new",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RivaRun:
    """Run NVIDIA's ``scripts/asr/riva_streaming_asr_client.py`` (load generator) once.

    The same calls as :func:`transcribe_file`, ``--num-clients`` streams in threads,
    ``--num-iterations`` times each; finals go to ``output_<i>.txt`` (in ``files``, parsed by
    ``finals``) in the ``Time ..: Transcript 0:`` format. A failed stream raises RuntimeError
    in the main thread: exit 1.

    Args:
        port: The server's port on 127.0.0.1.
        wav: The audio file.
        *flags: More options, e.g. ``"--num-clients", "4"``, ``"--simulate-realtime"``.
        metadata: Sent with each call.
        venv: ``new`` (2.28.0) or ``old`` (2.24.0).
        timeout_s: Kill it after this long.
    """
    args = [str(riva_python(venv)), str(STREAMING_ASR_CLIENT), *_connection_args(port, metadata)]
    return _run([*args, "--input-file", str(Path(wav).resolve()), *flags], timeout_s)


def talk(
    port: int,
    text: str | None,
    out_wav: Path,
    *flags: str,
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    venv: Venv = "new",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RivaRun:
    """Run NVIDIA's ``scripts/tts/talk.py --server 127.0.0.1:PORT --text TEXT -o OUT_WAV``.

    Without ``--stream`` it calls ``Synthesize`` once; with it ``SynthesizeOnline`` (2.28.0: a
    bidirectional stream of one request per text; 2.24.0: one request, a response stream).
    The request has ``language_code`` en-US, ``encoding`` LINEAR_PCM, ``sample_rate_hz`` 44100
    unless ``--sample-rate-hz``, and ``voice_name`` only with ``--voice``. It writes a mono 16-bit
    WAV at that rate with the responses' ``audio`` appended as they come. On any error it prints
    the gRPC details and still exits 0, so the run's ``problem`` is set when the WAV is empty.

    Args:
        port: The server's port on 127.0.0.1.
        text: The text (``--text``); None passes no ``--text`` (give ``"--list-voices"``).
        out_wav: Where it writes the WAV (read back into ``audio`` and ``sample_rate``).
        *flags: More options, e.g. ``"--stream"``, ``"--sample-rate-hz", "16000"``,
            ``"--voice", "NAME"``, ``"--list-voices"``.
        metadata: Sent with the call.
        venv: ``new`` runs HEAD's ``talk.py`` with 2.28.0; ``old`` the 2.24-era ``talk.py``
            with 2.24.0.
        timeout_s: Kill it after this long.
    """
    out_wav = Path(out_wav).resolve()
    args = [str(riva_python(venv)), str(TALK[venv]), *_connection_args(port, metadata), "-o", str(out_wav)]
    if text is not None:
        args += ["--text", text]
    listing = "--list-voices" in flags
    return _run([*args, *flags], timeout_s, out_wav=None if listing else out_wav)


def run_riva_python(
    code: str | Path,
    *args: str,
    venv: Venv = "new",
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RivaRun:
    """Run Python in a client venv: a snippet (``python -c CODE``) or a script file.

    For tests that call the ``riva.client`` API (or its stubs) directly: pass the port in
    ``args`` or ``env`` and print results as JSON to parse ``stdout``.

    Args:
        code: The snippet, or a :class:`~pathlib.Path` of a script.
        *args: Its arguments (``sys.argv[1:]``).
        venv: ``new`` (2.28.0 and openai) or ``old`` (2.24.0).
        env: Variables to add to its environment.
        timeout_s: Kill it after this long.
    """
    program = [str(Path(code).resolve())] if isinstance(code, Path) else ["-c", code]
    return _run([str(riva_python(venv)), *program, *args], timeout_s, env=env)


def seed_gateway_calls(
    port: int,
    wav: Path,
    *flags: str,
    llm_url: str,
    out_wav: Path | None = None,
    env: Mapping[str, str] | None = None,
    venv: Venv = "new",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RivaRun:
    """Run ``tests/clients/riva/seed_gateway_calls.py`` (seed 002's gateway calls) in a client venv.

    It streams the WAV to ``StreamingRecognize`` (LINEAR_PCM, the WAV's rate, en-US, interim
    results, verbatim), sends each final transcript to ``LLM_SERVICE_URL`` with the openai SDK
    (streaming), and speaks each sentence of the answer with ``SynthesizeOnline`` (en-US,
    LINEAR_PCM, the WAV's rate, ``voice_name=""``). Exit 0 only with a final transcript, an
    answer and audio; 1 when a step failed (``summary["error_step"]``, ``summary["error"]``).

    Args:
        port: The Riva server's port on 127.0.0.1 (``RIVA_URI``).
        wav: A 16-bit PCM WAV (mono, as the seed's clients send).
        *flags: More options: ``--language``, ``--chunk-frames``, ``--chunk-pause``.
        llm_url: ``LLM_SERVICE_URL``, the ``/v1`` root of an OpenAI-compatible server.
        out_wav: Where it writes the spoken answer (also read into ``audio``); a temporary
            file when None.
        env: More variables: ``LLM_MODEL``, ``LLM_TEMPERATURE``, ``LLM_MAX_TOKENS``,
            ``LLM_SYSTEM_PROMPT`` (the seed's defaults otherwise).
        venv: ``new`` (2.28.0: ``SynthesizeOnline`` as a bidirectional stream) or ``old``
            (2.24.0 and openai 2.14.0: server-streaming, as the seed's locked 2.16.0 calls it).
        timeout_s: Kill it after this long.

    Returns:
        The run, with ``summary`` parsed from its last stdout line.
    """
    with tempfile.TemporaryDirectory(prefix="voxray-riva-seed-") as tmp:
        wav_out = Path(out_wav).resolve() if out_wav is not None else Path(tmp) / "answer.wav"
        args = [str(riva_python(venv)), str(SEED_GATEWAY_CALLS), str(Path(wav).resolve()), *flags]
        args += ["--out-wav", str(wav_out)]
        variables = {"RIVA_URI": f"{HOST}:{port}", "LLM_SERVICE_URL": llm_url, **(env or {})}
        run = _run(args, timeout_s, out_wav=wav_out, env=variables)
    summary: dict[str, Any] = {}
    for line in reversed(run.stdout.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and SEED_SUMMARY_KEY in message:
            summary = message[SEED_SUMMARY_KEY]
            break
    problem = run.problem if summary else "no summary line on stdout"
    return dataclasses.replace(run, summary=summary, problem=problem)
