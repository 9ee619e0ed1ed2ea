"""Streaming server-side VAD with OpenAI ``server_vad`` semantics, on Silero VAD (ONNX).

One :class:`SileroVAD` per process holds the model; every Session opens its own
:class:`VADStream`, which keeps the recurrent state, resamples the client's audio to
16 kHz and turns per-window speech probabilities into turn events. The Session keeps the
audio buffer itself; the VAD only reports times (ms of input audio since the stream began).

Silero v5+ contract (see ``silero_vad/utils_vad.py:OnnxWrapper``): each call takes 512 new
samples at 16 kHz with the previous call's last 64 samples prepended (``input`` [1, 576]),
the recurrent ``state`` [2, 1, 128] and ``sr``; it returns the speech probability [1, 1] and
the new state.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serve_app.engine.audio.pcm import StreamResampler

VAD_RATE = 16_000
WINDOW = 512  # samples per model call at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous window that Silero v5+ expects in front
WINDOW_MS = WINDOW * 1000 // VAD_RATE
HYSTERESIS = 0.15  # speech ends below threshold - 0.15, as Silero's VADIterator does


MAX_PREFIX_PADDING_MS = 5_000
MAX_SILENCE_DURATION_MS = 10_000


@dataclass(frozen=True)
class VADParams:
    """Turn-detection settings; the ``server_vad`` fields of the Realtime API.

    The one source of their defaults (OpenAI's): the config, the Realtime protocol's
    ``server_vad`` model and the engine's settings all take them from here.

    Attributes:
        threshold: Speech probability at or above which speech starts (0..1).
        prefix_padding_ms: Audio before the detected onset that ``audio_start_ms`` includes.
        silence_duration_ms: Non-speech needed after speech before ``SpeechStopped``.
        pause_ms: Non-speech after which the early ``SpeechPaused`` hint fires. ``None``
            takes ``min(200, silence_duration_ms // 2)``; ``0`` turns the hint off.
    """

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    pause_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.prefix_padding_ms < 0 or self.silence_duration_ms < 0:
            raise ValueError("prefix_padding_ms and silence_duration_ms must be >= 0")
        if self.pause_ms is not None and self.pause_ms < 0:
            raise ValueError(f"pause_ms must be >= 0, got {self.pause_ms}")

    @property
    def effective_pause_ms(self) -> int:
        """The pause hint's delay in ms (0: no hint)."""
        if self.pause_ms is not None:
            return self.pause_ms
        return min(200, self.silence_duration_ms // 2)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began.

    Attributes:
        audio_start_ms: Where the utterance's audio begins: onset minus prefix padding,
            clamped at the start of the stream, the last ``reset`` and the previous
            ``SpeechStopped.audio_end_ms``.
        speech_start_ms: Start of the first window judged as speech.
    """

    audio_start_ms: int
    speech_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Early hint: speech has been silent for ``pause_ms``; it may be the end of the turn.

    Attributes:
        audio_end_ms: Stream time when the pause was decided (includes the silence).
        speech_end_ms: End of the last window judged as speech.
    """

    audio_end_ms: int
    speech_end_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back after a ``SpeechPaused``, before ``SpeechStopped``.

    Attributes:
        audio_ms: Start of the window where speech resumed.
    """

    audio_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Speech ended: ``silence_duration_ms`` of non-speech followed it.

    Attributes:
        audio_end_ms: Stream time when the stop was decided; like OpenAI's, it includes
            the trailing silence.
        speech_end_ms: End of the last window judged as speech.
    """

    audio_end_ms: int
    speech_end_ms: int


VADEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechStopped

_SESSIONS: dict[str, ort.InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _shared_session(model_path: str) -> ort.InferenceSession:
    """One InferenceSession per model file and process; ``run`` is thread-safe."""
    key = str(Path(model_path).resolve())
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            opts = ort.SessionOptions()
            # Each call is a tiny 512-sample window: threads would cost more than they
            # save, and the Ingress runs many streams side by side.
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(key, sess_options=opts, providers=["CPUExecutionProvider"])
            _SESSIONS[key] = session
        return session


class SileroVAD:
    """The Silero VAD model, loaded once per process and shared by all streams.

    Args:
        model_path: Path to the Silero v5/v6 ONNX file (``resolve_model("bundled:silero-vad")``),
            or a directory holding ``silero_vad.onnx`` (e.g. a Hugging Face snapshot).
        params: Default turn-detection settings for new streams.
    """

    def __init__(self, model_path: str | Path, params: VADParams | None = None) -> None:
        path = Path(model_path)
        if path.is_dir():
            found = sorted(path.rglob("silero_vad.onnx"))
            if not found:
                raise FileNotFoundError(f"{path}: no silero_vad.onnx in this directory")
            path = found[0]
        self.model_path = str(path)
        self.params = params or VADParams()
        self._session = _shared_session(self.model_path)
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{model_path}: not a Silero v5+ VAD model (inputs {sorted(names)})")

    @property
    def session(self) -> ort.InferenceSession:
        """The shared InferenceSession (for :func:`run_windows`)."""
        return self._session

    def stream(self, params: VADParams | None = None) -> VADStream:
        """Open a stream with its own recurrent state and turn state."""
        return VADStream(self._session, params or self.params)


class VADStream:
    """Per-connection VAD: feed PCM16 as it arrives, get turn events back.

    Not thread-safe: one stream belongs to one Session.

    Args:
        session: The shared Silero InferenceSession.
        params: Initial turn-detection settings.
    """

    def __init__(self, session: ort.InferenceSession, params: VADParams) -> None:
        self._session = session
        self._params = params
        # Preallocated model inputs: [context | window] and the recurrent state.
        self._x = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._pending = bytearray()  # 16 kHz PCM16 not yet judged
        self._read = 0  # bytes of _pending already judged (dropped at the next push)
        self._resampler: StreamResampler | None = None
        self._in_rate = 0
        self._in_ms_before = 0.0  # input ms fed at earlier rates
        self._in_samples = 0  # input samples fed at the current rate
        self._origin_ms = 0  # audio_start_ms never reaches before this: last reset or stop
        self._t16 = 0  # 16 kHz samples processed since the stream began
        self._prob = 0.0
        self._clear_turn()

    def _clear_turn(self) -> None:
        self._speaking = False
        self._silence_start_ms: int | None = None  # set while speaking but silent
        self._paused = False

    @property
    def params(self) -> VADParams:
        """Current turn-detection settings."""
        return self._params

    def configure(self, params: VADParams | None = None, **changes: Any) -> VADParams:
        """Change settings mid-stream; they apply from the next window on.

        Args:
            params: New settings to take whole.
            **changes: Or single fields to change (``silence_duration_ms=800``).

        Returns:
            The settings now in force.
        """
        base = params or self._params
        self._params = dataclasses.replace(base, **changes) if changes else base
        return self._params

    @property
    def probability(self) -> float:
        """Speech probability of the last processed window."""
        return self._prob

    @property
    def stream_ms(self) -> float:
        """Milliseconds of input audio fed since the stream began."""
        rate_ms = self._in_samples * 1000 / self._in_rate if self._in_rate else 0.0
        return self._in_ms_before + rate_ms

    @property
    def processed_ms(self) -> int:
        """Stream time up to which windows have been judged (lags ``stream_ms`` slightly)."""
        return self._t16 * 1000 // VAD_RATE

    @property
    def speaking(self) -> bool:
        """Whether the stream is inside an utterance (between started and stopped)."""
        return self._speaking

    def feed(self, pcm16: bytes, sample_rate: int = 24_000) -> list[VADEvent]:
        """Process the next chunk of input audio now, on the calling thread.

        Args:
            pcm16: Mono PCM16 of any length.
            sample_rate: Its rate in Hz; a change of rate mid-stream is allowed.

        Returns:
            The events decided by the whole windows this chunk completed, in order.
        """
        self.push(pcm16, sample_rate)
        return run_windows(self._session, [self])[0]

    def push(self, pcm16: bytes, sample_rate: int = 24_000) -> int:
        """Queue input audio without judging it; :func:`run_windows` judges it later.

        Args:
            pcm16: Mono PCM16 of any length.
            sample_rate: Its rate in Hz.

        Returns:
            How many whole windows are now waiting.
        """
        if sample_rate != self._in_rate:
            self._switch_rate(sample_rate)
        assert self._resampler is not None
        if self._read:  # drop the windows judged since the last push
            del self._pending[: self._read]
            self._read = 0
        self._in_samples += len(pcm16) // 2
        self._pending += self._resampler.process(pcm16)
        return self.ready_windows

    @property
    def ready_windows(self) -> int:
        """Whole 32 ms windows pushed but not judged yet."""
        return (len(self._pending) - self._read) // (WINDOW * 2)

    def _switch_rate(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if self._resampler is not None:
            self._pending += self._resampler.flush()
            self._in_ms_before = self.stream_ms
        self._in_rate, self._in_samples = sample_rate, 0
        # LQ: the 24 -> 16 kHz filter of HQ holds back ~30 ms, which would delay every
        # turn decision; the VAD does not need audiophile quality.
        self._resampler = StreamResampler(sample_rate, VAD_RATE, quality="LQ")

    def _load_window(self, row: np.ndarray, state: np.ndarray) -> None:
        """Write the next window (with its context) and the recurrent state into a batch row."""
        ints = np.frombuffer(self._pending, dtype="<i2", count=WINDOW, offset=self._read)
        np.multiply(ints, 1.0 / 32768.0, out=self._x[0, CONTEXT:], casting="unsafe")
        del ints  # the view pins the bytearray, which push() resizes
        self._read += WINDOW * 2
        row[:] = self._x[0]
        state[:] = self._state[:, 0]

    def _accept(self, prob: float, state: np.ndarray) -> VADEvent | None:
        """Take the model's output for the window last loaded and advance the turn state."""
        self._state = state
        self._prob = prob
        self._x[0, :CONTEXT] = self._x[0, WINDOW:]
        start_ms = self._t16 * 1000 // VAD_RATE
        self._t16 += WINDOW
        return self._decide(prob, start_ms, self._t16 * 1000 // VAD_RATE)

    def _decide(self, prob: float, start_ms: int, end_ms: int) -> VADEvent | None:
        """Advance the turn state by one window; Silero VADIterator's two-level hysteresis."""
        p = self._params
        if not self._speaking:
            if prob >= p.threshold:
                self._speaking, self._silence_start_ms, self._paused = True, None, False
                return SpeechStarted(max(self._origin_ms, start_ms - p.prefix_padding_ms), start_ms)
            return None
        if self._silence_start_ms is None:
            if prob >= max(p.threshold - HYSTERESIS, 0.01):
                return None
            self._silence_start_ms = start_ms
        elif prob >= p.threshold:
            # Inside a silence only a confident window resumes speech.
            self._silence_start_ms = None
            if self._paused:
                self._paused = False
                return SpeechResumed(start_ms)
            return None
        silence = end_ms - self._silence_start_ms
        if silence >= p.silence_duration_ms:
            speech_end = self._silence_start_ms
            self._clear_turn()
            # The Session commits the buffer here; the next turn's padding cannot reach back.
            self._origin_ms = end_ms
            return SpeechStopped(end_ms, speech_end)
        pause = p.effective_pause_ms
        if pause and not self._paused and silence >= pause:
            self._paused = True
            return SpeechPaused(end_ms, self._silence_start_ms)
        return None

    def reset(self) -> None:
        """Forget audio and turn state (``input_audio_buffer.clear``); keep the time base.

        Audio still held in the resampler or a partial window is dropped; stream time goes
        on from ``stream_ms``, so later events stay on the same timeline.
        """
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._x[:] = 0.0
        self._pending.clear()
        self._read = 0
        if self._resampler is not None:
            self._resampler.reset()
        self._origin_ms = round(self.stream_ms)
        self._t16 = self._origin_ms * VAD_RATE // 1000
        self._prob = 0.0
        self._clear_turn()


_SR = np.array(VAD_RATE, dtype=np.int64)


def run_windows(session: ort.InferenceSession, streams: Sequence[VADStream]) -> list[list[VADEvent]]:
    """Judge every waiting window of several streams, one model call per round.

    Round *k* takes the *k*-th waiting window of each stream that still has one, so each
    stream's windows stay in order while the streams share calls: one call on a batch of
    64 windows costs about as much as 20 calls on one (Silero is a small recurrent net, and
    per-call overhead dominates).

    Args:
        session: The shared Silero InferenceSession.
        streams: Distinct streams; each must not be used elsewhere while this runs.

    Returns:
        The events each stream's windows decided, in stream order.
    """
    events: list[list[VADEvent]] = [[] for _ in streams]
    active = [i for i, stream in enumerate(streams) if stream.ready_windows]
    while active:
        x = np.empty((len(active), CONTEXT + WINDOW), dtype=np.float32)
        state = np.empty((2, len(active), 128), dtype=np.float32)
        for row, i in enumerate(active):
            streams[i]._load_window(x[row], state[:, row])
        probs, new_state = session.run(None, {"input": x, "state": state, "sr": _SR})
        for row, i in enumerate(active):
            event = streams[i]._accept(float(probs[row, 0]), new_state[:, row : row + 1].copy())
            if event is not None:
                events[i].append(event)
        active = [i for i in active if streams[i].ready_windows]
    return events
