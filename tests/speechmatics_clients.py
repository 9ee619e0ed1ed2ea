"""Runs the real Speechmatics real-time clients, unmodified, against voxray's ``/v2`` in tests.

Two clients from PyPI, each in a venv of its own (``scripts/setup-speechmatics-clients.sh``):

- ``speechmatics-python`` 5.0.0.post1's CLI, ``.venv-sm-cli/bin/speechmatics rt transcribe``.
  It appends ``/<language>`` to the URL's path (``/v2`` becomes ``/v2/en``) and, with
  ``--print-json``, prints each ``AddTranscript`` and ``AddPartialTranscript`` as a JSON line.
- ``speechmatics-rt`` 1.2.1's ``AsyncClient``, run by ``tests/sm_sdk_driver.py`` with
  ``.venv-sm-sdk/bin/python``; it connects to the URL as given.

Each run gets an empty temporary HOME (the CLI reads ``~/.speechmatics/config``) and an
environment without the main venv's Python variables. Both send a WAV file as is
(``"audio_format": {"type": "file"}``), or with ``raw=True`` its samples as raw ``pcm_s16le``
(the CLI from stdin). What each sends and needs back from a server is written up in the
docstrings of :func:`run_sm_cli` and :func:`run_sm_sdk`.

Typical use::

    require_sm_clients()  # skip, or fail under VOXRAY_REQUIRE_ENGINES=speechmatics
    result = run_sm_cli("ws://127.0.0.1:8000/v2", Path("dialogue.wav"))
    result.assert_ok()
    print(result.text, result.speakers, result.partial_count)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve_app.engine.audio.pcm import read_wav
from tests.flow_cli import parse_json_lines

REPO_ROOT = Path(__file__).resolve().parent.parent
SM_CLI = REPO_ROOT / ".venv-sm-cli" / "bin" / "speechmatics"
"""The CLI of ``speechmatics-python`` 5.0.0.post1."""
SM_SDK_PYTHON = REPO_ROOT / ".venv-sm-sdk" / "bin" / "python"
"""The interpreter of the venv with ``speechmatics-rt`` 1.2.1."""
SM_SDK_DRIVER = Path(__file__).resolve().parent / "sm_sdk_driver.py"
ENGINE_NAME = "speechmatics"
"""Their name in ``VOXRAY_REQUIRE_ENGINES``: listed there, missing clients fail instead of skipping."""
DEFAULT_AUTH_TOKEN = "voxray-sm-test-key"
DEFAULT_TIMEOUT_S = 180.0
SDK_SUMMARY_KEY = "sm_sdk_driver"  # the driver's last stdout line: {"sm_sdk_driver": {...}}

# Variables that must not reach the clients' interpreters: they would import the main venv's
# packages, or send the CLI to Speechmatics' management platform.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "SM_MANAGEMENT_PLATFORM_URL")
_DROPPED_ENV_PREFIXES = ("SPEECHMATICS_",)


def sm_clients_available() -> bool:
    """Whether ``scripts/setup-speechmatics-clients.sh`` has installed both clients.

    Returns:
        True when the CLI and the SDK venv's interpreter are executable files.
    """
    return all(path.is_file() and os.access(path, os.X_OK) for path in (SM_CLI, SM_SDK_PYTHON))


def require_sm_clients() -> None:
    """Skip the calling test (module) unless both clients are installed.

    When ``VOXRAY_REQUIRE_ENGINES`` lists ``speechmatics`` (``scripts/test.sh``, and so CI),
    missing clients fail the test instead, so that run cannot pass by skipping them.

    Raises:
        pytest.skip.Exception: A client is missing and not required.
        pytest.fail.Exception: A client is missing but ``VOXRAY_REQUIRE_ENGINES`` requires it.
    """
    from tests.engines import skip_unless_required

    if sm_clients_available():
        return
    message = (
        f"the Speechmatics RT clients are not installed ({SM_CLI}, {SM_SDK_PYTHON}; "
        "run scripts/setup-speechmatics-clients.sh)"
    )
    skip_unless_required(ENGINE_NAME, message)


@dataclass(frozen=True)
class SmWord:
    """One word of a final transcript, as the client received it.

    Attributes:
        text: ``alternatives[0].content``.
        start_s: ``start_time``, seconds from the start of the audio.
        end_s: ``end_time``.
        speaker: ``alternatives[0].speaker`` (``S1``, ``S2``, ...), None when absent.
        confidence: ``alternatives[0].confidence``, None when absent.
    """

    text: str
    start_s: float
    end_s: float
    speaker: str | None
    confidence: float | None


@dataclass(frozen=True)
class SmClientResult:
    """What one run of a client did.

    Attributes:
        client: ``"cli"`` or ``"sdk"``.
        args: Its command line.
        returncode: Its exit status; None when it was killed at the timeout.
        stdout: Its standard output (JSON lines; see :func:`run_sm_cli`, :func:`run_sm_sdk`).
        stderr: Its standard error: its logging, and the SDK's exception when it raised.
        messages: The server messages it printed, in order.
        summary: The SDK driver's summary (``end_of_transcript``, ``errors``, ``audio_added``,
            ``problems``, ``audio_bytes_sent``, ...); empty for the CLI.
        elapsed_s: Wall time of the run.
        timed_out: Whether it was killed at the timeout.
    """

    client: str
    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Whether the client exited 0 within the timeout."""
        return self.returncode == 0 and not self.timed_out

    def of(self, message_type: str) -> list[dict[str, Any]]:
        """The printed messages of one type, e.g. ``AddTranscript``, in order."""
        return [m for m in self.messages if m.get("message") == message_type]

    @property
    def words(self) -> list[SmWord]:
        """The words (``type: word`` results) of every ``AddTranscript``, in order."""
        words = []
        for message in self.of("AddTranscript"):
            for result in message.get("results", []):
                alternatives = result.get("alternatives") or [{}]
                if result.get("type") != "word" or "content" not in alternatives[0]:
                    continue
                first = alternatives[0]
                words.append(
                    SmWord(
                        text=first["content"],
                        start_s=float(result["start_time"]),
                        end_s=float(result["end_time"]),
                        speaker=first.get("speaker"),
                        confidence=first.get("confidence"),
                    )
                )
        return words

    @property
    def text(self) -> str:
        """The final words joined with spaces (punctuation left out)."""
        return " ".join(word.text for word in self.words)

    @property
    def speakers(self) -> set[str]:
        """The distinct speaker labels of the final words."""
        return {word.speaker for word in self.words if word.speaker is not None}

    @property
    def partial_count(self) -> int:
        """How many ``AddPartialTranscript`` messages it printed."""
        return len(self.of("AddPartialTranscript"))

    def describe(self) -> str:
        """A summary for assertion messages: status, summary, and the ends of its output."""
        status = f"killed after {self.elapsed_s:.1f} s" if self.timed_out else f"exit {self.returncode}"
        return (
            f"speechmatics {self.client} {status} in {self.elapsed_s:.2f} s; {len(self.words)} final words, "
            f"{self.partial_count} partials, speakers {sorted(self.speakers)}; summary {self.summary}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )

    def assert_ok(self) -> None:
        """Fail with the client's output unless it exited 0 within the timeout."""
        assert self.ok, self.describe()

    def assert_word_times(self, audio_s: float, slack_s: float = 0.05) -> None:
        """Fail unless the final words start in order and lie within the audio.

        Args:
            audio_s: The length of the audio sent, in seconds.
            slack_s: How far past the end a word may end (rounding of times).
        """
        starts = [word.start_s for word in self.words]
        assert starts == sorted(starts), self.describe()
        assert all(0 <= w.start_s <= w.end_s <= audio_s + slack_s for w in self.words), self.describe()


def client_env(home: Path) -> dict[str, str]:
    """A client's environment: this one with an empty HOME and no main-venv Python variables.

    Args:
        home: An empty directory for this run.

    Returns:
        The environment variables.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_ENV and not key.startswith(_DROPPED_ENV_PREFIXES)
    }
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONUNBUFFERED="1")
    return env


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


REALTIME_FRAME_S = 0.1
"""A real-time stream is written in pieces of this much audio, each when its time comes."""


def _feed(fd: int, data: bytes, bytes_per_s: float | None) -> None:
    """Write ``data`` to the pipe ``fd`` (then close it), paced at ``bytes_per_s`` when given.

    Paced, it is what a microphone piped into a client looks like: 100 ms of audio every 100 ms.
    Stops early, without an error, when the client has closed its end (it exited).
    """
    piece = max(2, int(bytes_per_s * REALTIME_FRAME_S) // 2 * 2) if bytes_per_s else len(data) or 1
    started = time.monotonic()
    try:
        for at in range(0, len(data), piece):
            view = memoryview(data)[at : at + piece]
            if bytes_per_s:  # a piece is there once it has been "recorded"
                time.sleep(max(0.0, started + (at + len(view)) / bytes_per_s - time.monotonic()))
            while view:
                view = view[os.write(fd, view) :]
    except OSError:  # EPIPE: the client is gone; its exit status tells why
        pass
    finally:
        os.close(fd)


def _run(
    client: str, args: list[str], stdin: bytes | None, timeout_s: float, bytes_per_s: float | None = None
) -> SmClientResult:
    """Run one client in a fresh temporary HOME (also its working directory) and parse its output.

    ``stdin`` (if any) reaches the client through a pipe fed by a thread, at ``bytes_per_s`` when
    given (a real-time stream), else at once.
    """
    with tempfile.TemporaryDirectory(prefix=f"voxray-sm-{client}-") as tmp:
        started = time.monotonic()
        read_fd, write_fd = os.pipe() if stdin is not None else (subprocess.DEVNULL, None)
        process = subprocess.Popen(
            args,
            stdin=read_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(Path(tmp)),
            cwd=tmp,
        )
        feeder = None
        if write_fd is not None:
            os.close(read_fd)  # the client's copy only: its exit then ends the feeder's writes
            feeder = threading.Thread(target=_feed, args=(write_fd, stdin, bytes_per_s), daemon=True)
            feeder.start()
        timed_out = False
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            timed_out = True
        if feeder is not None:
            feeder.join()
        elapsed_s = time.monotonic() - started
    printed = parse_json_lines(_text(stdout))
    summary = next((m[SDK_SUMMARY_KEY] for m in printed if SDK_SUMMARY_KEY in m), {})
    return SmClientResult(
        client=client,
        args=args,
        returncode=None if timed_out else process.returncode,
        stdout=_text(stdout),
        stderr=_text(stderr),
        messages=[m for m in printed if "message" in m],
        summary=summary,
        elapsed_s=elapsed_s,
        timed_out=timed_out,
    )


def run_sm_cli(
    url: str,
    wav_path: Path,
    *,
    diarization: bool = True,
    partials: bool = True,
    raw: bool = False,
    realtime: bool = False,
    auth_token: str | None = DEFAULT_AUTH_TOKEN,
    extra_args: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SmClientResult:
    """Run ``speechmatics rt transcribe --url URL --ssl-mode none ... --print-json`` once.

    The CLI connects to ``URL/<language>?sm-sdk=python-cli-5.0.0.post1``, sends
    ``StartRecognition`` (``audio_format`` ``{"type": "file"}``, or ``raw`` ``pcm_s16le`` at the
    WAV's rate), waits (without a timeout) for ``RecognitionStarted``, sends 4096-byte binary
    frames with at most 512 not yet acknowledged by ``AudioAdded`` (one ``AudioAdded`` too many
    crashes it: exit 1), then ``EndOfStream`` with ``last_seq_no`` = frames sent. It exits 0 on
    ``EndOfTranscript`` (or a close with code 1000), 1 on ``Error`` or any other close code.

    It blocks: the server must not run on the calling thread's event loop.

    Args:
        url: The RT endpoint, ``ws://HOST:PORT[/prefix]/v2`` (the CLI adds ``/en``).
        wav_path: A 16-bit WAV file.
        diarization: Pass ``--diarization speaker``.
        partials: Pass ``--enable-partials``.
        raw: Send the WAV's samples as raw ``pcm_s16le`` on stdin (``--raw pcm_s16le
            --sample-rate RATE -``) instead of the file.
        realtime: Raw, and written to its stdin at the audio's own pace (like a microphone
            piped in), so the server hears it as a live stream; implies ``raw``.
        auth_token: Sent as ``Authorization: Bearer <auth_token>``; None sends no header.
        extra_args: More options of ``rt transcribe``.
        timeout_s: Kill it after this long.

    Returns:
        The run's result; check ``ok`` or call ``assert_ok()``.
    """
    args = [str(SM_CLI), "rt", "transcribe", "--url", url, "--ssl-mode", "none", "--print-json"]
    if auth_token is not None:
        args += ["--auth-token", auth_token]
    if diarization:
        args += ["--diarization", "speaker"]
    if partials:
        args.append("--enable-partials")
    args += list(extra_args)
    if not (raw or realtime):
        return _run("cli", [*args, str(wav_path)], None, timeout_s)
    pcm, rate = read_wav(wav_path)
    args += ["--raw", "pcm_s16le", "--sample-rate", str(rate), "-"]
    return _run("cli", args, pcm, timeout_s, bytes_per_s=2 * rate if realtime else None)


def run_sm_sdk(
    url: str,
    wav_path: Path,
    *,
    diarization: bool = True,
    partials: bool = True,
    raw: bool = False,
    realtime: bool = False,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SmClientResult:
    """Run ``AsyncClient(api_key=..., url=url).transcribe(open(wav), ...)`` once (the SDK driver).

    The SDK connects to ``url?sm-sdk=python-rt-sdk-v1.2.1`` as given (no language appended), with
    ``Authorization: Bearer`` and ``X-Request-Id`` headers; it sends ``StartRecognition`` (with
    ``"model": "enhanced"`` added), needs ``RecognitionStarted`` within 5 s, sends 4096-byte
    frames without flow control, then ``EndOfStream`` whose ``last_seq_no`` may be lower than
    the frames sent (each ``AudioAdded`` overwrites its count), and ends at ``EndOfTranscript``.
    The driver exits 0 only when ``EndOfTranscript`` came, no ``Error`` did, and every
    transcript parsed with the SDK's ``TranscriptResult.from_message``.

    It blocks: the server must not run on the calling thread's event loop.

    Args:
        url: The RT endpoint, e.g. ``ws://HOST:PORT[/prefix]/v2/en``.
        wav_path: A 16-bit WAV file.
        diarization: Ask for ``"diarization": "speaker"``.
        partials: Ask for ``"enable_partials": true``.
        raw: Send the WAV's samples as raw ``pcm_s16le`` (``AudioFormat(encoding=PCM_S16LE,
            sample_rate=RATE)``) instead of the file.
        realtime: Raw, and read from a file object whose ``read()`` returns the audio at its
            own pace (a live source, as the SDK takes one); implies ``raw``.
        auth_token: The SDK's ``api_key``.
        timeout_s: Kill it after this long (``transcribe()`` gets 10 s less as its own timeout).

    Returns:
        The run's result: ``messages`` has every server message but ``AudioAdded`` (counted in
        ``summary["audio_added"]``).
    """
    with tempfile.TemporaryDirectory(prefix="voxray-sm-sdk-audio-") as tmp:
        audio = wav_path
        args = [str(SM_SDK_PYTHON), str(SM_SDK_DRIVER), "--url", url, "--api-key", auth_token]
        if raw or realtime:
            pcm, rate = read_wav(wav_path)
            audio = Path(tmp) / "audio.raw"
            audio.write_bytes(pcm)
            args += ["--raw-rate", str(rate)] + (["--realtime"] if realtime else [])
        args += ["--audio", str(audio), "--timeout", str(max(timeout_s - 10, 1))]
        args += ["--diarization", "speaker" if diarization else "none"]
        args.append("--partials" if partials else "--no-partials")
        return _run("sdk", args, None, timeout_s)
