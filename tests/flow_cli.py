"""Runs the real Speechmatics Flow CLI (``speechmatics-flow`` 0.1.2 from PyPI) in tests.

The CLI lives in its own venv, ``.venv-flow`` (``scripts/setup-flow-client.sh``), because it
pins ``websockets<=13.1``; tests in the main venv run it as a subprocess. It is unmodified and
uses real PyAudio on real PortAudio: the CLI always opens an output stream for the agent's
speech, so each run gets a temporary HOME and an ALSA configuration of its own
(``ALSA_CONFIG_PATH``) whose default PCM is a ``file`` plugin over a ``null`` device. PortAudio's
ALSA host API opens it like a sound card, nothing is heard, writes return at once (no real-time
pacing), and the bytes the CLI played land in a file that :class:`FlowCliResult` returns as
``played_audio``.

What the CLI needs from a server to exit 0 (see tests/serve/test_flow_cli.py):

- ``ConversationStarted`` before it sends any audio; then one ``AudioAdded`` per binary frame
  it sends (at most 512 may be unacknowledged; one too many crashes it with a
  ``BoundedSemaphore`` ``ValueError``).
- Every binary audio frame from the server a multiple of 256 bytes (``--playback-chunk-size``):
  a remainder makes its playback loop spin at 100 % CPU without ever yielding.
- ``ConversationEnded``: it ends the run (the CLI then closes the socket with 1000 at once).
  Without it the CLI warns "Timeout waiting for ConversationEnded" 5 s after ``AudioEnded``
  and then hangs, even when the server closes. Sent later than 5 s, it still ends the run
  with exit 0 (after that warning).
- No close by the server before the CLI's last ``AudioReceived`` (it acknowledges each
  server binary frame, just after reading it): a send on a socket the server has closed exits
  1 with "WebSocketError: ... received 1000 (OK)". Let the CLI close first.

Typical use::

    cli = require_flow_cli()  # skip, or fail under VOXRAY_REQUIRE_ENGINES=flow
    result = run_flow_cli(port, Path("tests/fixtures/question.wav"))
    result.assert_ok()
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOW_VENV = REPO_ROOT / ".venv-flow"
"""The CLI's own venv, made by ``scripts/setup-flow-client.sh``."""
FLOW_CLI = FLOW_VENV / "bin" / "speechmatics-flow"
ENGINE_NAME = "flow"
"""Its name in ``VOXRAY_REQUIRE_ENGINES``: listed there, a missing CLI fails instead of skipping."""
FLOW_SAMPLE_RATE = 16000
"""The CLI's default ``--sample-rate``; its input is raw ``pcm_s16le`` at this rate."""
PLAYBACK_CHUNK_BYTES = 256
"""The CLI's ``--playback-chunk-size``: each server audio frame must be a multiple of it."""
DEFAULT_AUTH_TOKEN = "voxray-flow-test-key"
DEFAULT_TIMEOUT_S = 60.0

ALSA_CONFIG = """\
# The whole ALSA configuration of one speechmatics-flow run (ALSA_CONFIG_PATH replaces
# /usr/share/alsa/alsa.conf, so no card is probed): a silent default device that keeps what
# is played. "null" accepts any rate and format, so PortAudio opens 16 kHz mono S16 as is.
pcm.!default {{
    type file
    slave.pcm {{
        type null
    }}
    file "{played}"
    format "raw"
}}
"""

# Variables that must not reach the CLI's interpreter: a Python path of the main venv would
# shadow .venv-flow's websockets 13.1.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "SM_MANAGEMENT_PLATFORM_URL")


def flow_cli_executable() -> Path:
    """The ``speechmatics-flow`` executable of ``.venv-flow`` (it may not exist).

    Returns:
        Its path.
    """
    return FLOW_CLI


def flow_cli_available() -> bool:
    """Whether ``scripts/setup-flow-client.sh`` has installed the CLI.

    Returns:
        True when ``.venv-flow/bin/speechmatics-flow`` is an executable file.
    """
    return FLOW_CLI.is_file() and os.access(FLOW_CLI, os.X_OK)


def require_flow_cli() -> Path:
    """The CLI's executable, or skip the calling test (module) when it is not installed.

    When ``VOXRAY_REQUIRE_ENGINES`` lists ``flow`` (``scripts/test.sh`` sets it, and so CI), a
    missing CLI fails the test instead, so that run cannot pass by skipping it.

    Returns:
        The path of ``speechmatics-flow``.

    Raises:
        pytest.skip.Exception: The CLI is missing and not required.
        pytest.fail.Exception: The CLI is missing but ``VOXRAY_REQUIRE_ENGINES`` requires it.
    """
    import pytest

    from tests.engines import REQUIRE_ENV, required_engines

    if flow_cli_available():
        return FLOW_CLI
    message = f"the speechmatics-flow CLI is not installed at {FLOW_CLI} (run scripts/setup-flow-client.sh)"
    if ENGINE_NAME in required_engines():
        pytest.fail(f"{message}, but {REQUIRE_ENV} requires it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def flow_url(port: int, host: str = "127.0.0.1", path: str = "/v1/flow") -> str:
    """The ``ws://`` URL of a Flow endpoint on loopback.

    Args:
        port: The server's port.
        host: Its host.
        path: The endpoint's path, with any route prefix.

    Returns:
        For example ``ws://127.0.0.1:8000/v1/flow``.
    """
    return f"ws://{host}:{port}{path}"


def wav_to_flow_pcm(wav: Path | str | bytes, rate: int = FLOW_SAMPLE_RATE) -> bytes:
    """Raw mono ``pcm_s16le`` at ``rate`` from a 16-bit WAV file: what the CLI reads on stdin.

    The header is dropped (piped as is, the CLI would send it as audio), channels are averaged,
    and other rates are resampled with soxr.

    Args:
        wav: The WAV file's path, or its bytes.
        rate: The wanted sample rate in Hz.

    Returns:
        The samples, without a header.

    Raises:
        ValueError: The WAV file's samples are not 16-bit PCM.
    """
    import numpy as np

    source = io.BytesIO(wav) if isinstance(wav, bytes) else str(wav)
    with wave.open(source, "rb") as reader:
        if reader.getsampwidth() != 2 or reader.getcomptype() != "NONE":
            raise ValueError(f"{wav!r:.80}: not 16-bit PCM")
        channels, src_rate = reader.getnchannels(), reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype("<i2")
    if src_rate != rate and samples.size:
        import soxr

        samples = soxr.resample(samples, src_rate, rate, quality="HQ")
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


def _as_pcm(audio: bytes | Path) -> bytes:
    """The CLI's stdin: raw PCM as is, a WAV file (path or bytes) converted."""
    if isinstance(audio, Path) or audio[:4] == b"RIFF":
        return wav_to_flow_pcm(audio)
    if len(audio) % 2:
        raise ValueError(f"raw pcm_s16le must have an even length, got {len(audio)} bytes")
    return audio


def parse_json_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects that ``--print-json`` printed, one a line, in order.

    With ``--print-json`` the CLI prints the server's ``AddTranscript``,
    ``AddPartialTranscript`` and ``ResponseStarted`` messages as they arrived (nothing else).

    Args:
        stdout: The CLI's standard output.

    Returns:
        The parsed messages; lines that are not JSON objects are left out.
    """
    messages = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


def flow_cli_command(
    url: str,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    print_json: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The CLI's command line for a plain ``ws://`` server with a fixed key.

    Args:
        url: The Flow endpoint, ``ws://…/v1/flow``.
        auth_token: Sent as ``Authorization: Bearer <auth_token>``.
        print_json: Print the server's transcript and response messages as JSON lines.
        extra_args: More CLI options, e.g. ``["--assistant", "amelia"]``.

    Returns:
        The argument vector.
    """
    command = [
        str(FLOW_CLI),
        "--url",
        url,
        "--ssl-mode",
        "none",  # ws:// fails under the default "regular"
        "--generate-temp-token",
        "false",  # the default "true" POSTs the key to Speechmatics' management platform
        "--auth-token",
        auth_token,
    ]
    if print_json:
        command.append("--print-json")
    return [*command, *extra_args]


@dataclass(frozen=True)
class FlowCliResult:
    """What one run of the CLI did.

    Attributes:
        args: Its command line.
        returncode: Its exit status; None when it was killed at the timeout.
        stdout: Its standard output: the transcripts and responses (plain text, or JSON lines
            with ``--print-json``).
        stderr: Its standard error: its logging, partial transcripts (plain mode), and the
            JACK library's complaints that no JACK server runs (harmless). With
            ``--print-json`` each ``AddTranscript`` also logs a harmless "Unhandled exception
            in handler ... TypeError" (a bug of the CLI's transcript handler).
        messages: The JSON objects of ``stdout`` (empty without ``--print-json``).
        played_audio: The pcm_s16le 16 kHz bytes the CLI wrote to its output stream. Its
            playback starts 10 ms (``--playback-buffering``) after ``ResponseStarted`` and is
            cancelled when ``ConversationEnded`` arrives, so audio sent just before that may
            be missing (all of it, when the server sends everything at once).
        elapsed_s: Wall time of the run.
        timed_out: Whether it was killed at the timeout.
    """

    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    played_audio: bytes = b""
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Whether the CLI exited 0 within the timeout."""
        return self.returncode == 0 and not self.timed_out

    def of(self, message_type: str) -> list[dict[str, Any]]:
        """The printed messages of one type (``--print-json`` runs).

        Args:
            message_type: e.g. ``AddTranscript`` or ``ResponseStarted``.

        Returns:
            Those messages, in order.
        """
        return [m for m in self.messages if m.get("message") == message_type]

    def describe(self) -> str:
        """A summary for assertion messages: status, stdout and the end of stderr."""
        status = f"killed after {self.elapsed_s:.1f} s" if self.timed_out else f"exit {self.returncode}"
        return (
            f"speechmatics-flow {status} in {self.elapsed_s:.2f} s, played {len(self.played_audio)} B\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )

    def assert_ok(self) -> None:
        """Fail with the CLI's output unless it exited 0 within the timeout."""
        assert self.ok, self.describe()


def flow_cli_env(home: Path) -> dict[str, str]:
    """The CLI's environment: this one, with a temp HOME and a silent ALSA device in it.

    Writes ``home/asound.conf`` (the device keeps the played audio in ``home/played.raw``).

    Args:
        home: An empty directory for this run.

    Returns:
        The environment variables.
    """
    config = home / "asound.conf"
    config.write_text(ALSA_CONFIG.format(played=home / "played.raw"))
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        ALSA_CONFIG_PATH=str(config),
        JACK_NO_START_SERVER="1",  # PortAudio's JACK probe: don't try to start one
        PYTHONUNBUFFERED="1",  # output written before a kill at the timeout is kept
    )
    return env


def _played(home: Path) -> bytes:
    path = home / "played.raw"
    return path.read_bytes() if path.exists() else b""


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def run_flow_cli(
    url: str | int,
    audio: bytes | Path,
    *,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    print_json: bool = True,
    extra_args: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> FlowCliResult:
    """Run the real CLI once against a Flow server, with ``audio`` piped on its stdin.

    It blocks, so the server must not run on the calling thread's event loop (use
    ``asyncio.to_thread(run_flow_cli, ...)`` there).

    Args:
        url: The endpoint's ``ws://`` URL, or a port for ``ws://127.0.0.1:PORT/v1/flow``.
        audio: Raw pcm_s16le at 16 kHz, or a 16-bit WAV file (a path, or bytes starting with
            ``RIFF``), which is converted to that.
        auth_token: The key, sent as ``Authorization: Bearer <auth_token>``.
        print_json: Pass ``--print-json`` (then ``messages`` holds what it printed).
        extra_args: More CLI options.
        timeout_s: Kill it after this long (it hangs when no ``ConversationEnded`` comes).

    Returns:
        The run's result; check ``ok`` or call ``assert_ok()``.
    """
    if isinstance(url, int):
        url = flow_url(url)
    args = flow_cli_command(url, auth_token, print_json, extra_args)
    pcm = _as_pcm(audio)
    with tempfile.TemporaryDirectory(prefix="voxray-flow-cli-") as tmp:
        home = Path(tmp)
        started = time.monotonic()
        try:
            done = subprocess.run(
                args,
                input=pcm,
                capture_output=True,
                env=flow_cli_env(home),
                cwd=home,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:  # run() has killed it
            stdout = _text(expired.stdout)
            return FlowCliResult(
                args=args,
                returncode=None,
                stdout=stdout,
                stderr=_text(expired.stderr),
                messages=parse_json_lines(stdout),
                played_audio=_played(home),
                elapsed_s=time.monotonic() - started,
                timed_out=True,
            )
        stdout = _text(done.stdout)
        return FlowCliResult(
            args=args,
            returncode=done.returncode,
            stdout=stdout,
            stderr=_text(done.stderr),
            messages=parse_json_lines(stdout),
            played_audio=_played(home),
            elapsed_s=time.monotonic() - started,
        )
