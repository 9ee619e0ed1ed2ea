"""One spoken turn against a voxray (or any OpenAI Realtime) server, measured from the client.

``talk`` streams a recording to ``/v1/realtime`` in 20 ms frames the way a microphone would,
lets the server's VAD end the turn, collects the spoken reply and times it. The timings are
taken from the moment the client sent the *last voiced frame* of the recording: the last 20 ms
frame whose RMS level exceeds ``VOICED_DBFS`` (-45 dBFS by default: well above the noise floor
of a quiet recording or a TTS render, well below speech). That is when a person would stop
talking, so ``voice_response_latency_ms`` (first reply audio byte received minus that instant)
is the delay a user hears, including the server's endpointing silence.

The CLI (``voxray talk``) and the latency benchmark (``bench.baseline``) both call ``talk``.
What a turn returns or raises (``TalkResult``, the ``TalkError`` family) is defined in
:mod:`serve_app.client.talk_result` and re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

# The result models and errors live in talk_result; imported here for use and so that
# `from serve_app.client.talk import TalkResult` (the CLI, bench, tests) keeps working.
from serve_app.client.talk_result import (
    RATE,
    ClientTimings,
    ReceivedEvent,
    ServerError,
    TalkConnectionError,
    TalkError,
    TalkResult,
    TalkServerError,
    TalkTimeout,
)
from serve_app.engine.audio.pcm import b64decode_audio, b64encode_audio, read_wav, resample_pcm16

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
START_HINT = "start it with `scripts/run.sh` (or `serve run configs/local.yaml`)"
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
VOICED_DBFS = -45.0
TRANSCRIPT_GRACE_S = 2.0  # how long to wait after response.done for a late user transcript

Progress = Callable[[str], None]


def frame_dbfs(pcm16: bytes, frame_bytes: int = FRAME_BYTES) -> np.ndarray:
    """RMS level in dBFS of each frame of mono PCM16 (a last partial frame is zero-padded).

    A full-scale square wave is 0 dBFS, a full-scale sine -3 dBFS, digital silence -inf.
    """
    samples = np.frombuffer(pcm16, dtype="<i2", count=len(pcm16) // 2).astype(np.float64)
    n = frame_bytes // 2
    samples = np.pad(samples, (0, -len(samples) % n)).reshape(-1, n)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(np.sqrt(np.mean(samples**2, axis=1)) / 32768.0)


def last_voiced_frame(
    pcm16: bytes, threshold_dbfs: float = VOICED_DBFS, frame_bytes: int = FRAME_BYTES
) -> int | None:
    """Index of the last frame whose RMS level exceeds ``threshold_dbfs``, or ``None``."""
    voiced = np.flatnonzero(frame_dbfs(pcm16, frame_bytes) > threshold_dbfs)
    return int(voiced[-1]) if voiced.size else None


def parse_server_timings(metadata: dict[str, str]) -> dict[str, float]:
    """The numeric entries of ``response.metadata``, ordered by value.

    Every server stage timing is measured from the same instant (the end of the user's speech),
    so ordering by value lays the stages out as a timeline whatever keys the server sends.
    """
    numeric: dict[str, float] = {}
    for key, value in metadata.items():
        with contextlib.suppress(TypeError, ValueError):
            numeric[key] = float(value)
    return dict(sorted(numeric.items(), key=lambda kv: (kv[1], kv[0])))


def load_input(path_or_pcm: str | Path | bytes, sample_rate: int = RATE) -> bytes:
    """Read a WAV file (any rate, mono or stereo 16-bit) or take PCM16 bytes; return 24 kHz mono."""
    if isinstance(path_or_pcm, bytes):
        pcm, rate = path_or_pcm, sample_rate
    else:
        pcm, rate = read_wav(path_or_pcm)
    return resample_pcm16(pcm, rate, RATE)


class _Turn:
    """One turn's connection, sender and receiver, and the state they share."""

    def __init__(self, frames: list[bytes], speech_end: int, fast: bool, max_silence_s: float, say: Progress):
        self.frames, self.speech_end, self.fast, self.say = frames, speech_end, fast, say
        self.max_silence_frames = int(max_silence_s * 1000 / FRAME_MS)
        self.t_speech_end: float | None = None  # perf_counter when the last voiced frame was sent
        self.silence_frames = 0
        self.active_response: str | None = None
        self.done = False
        self.final: dict[str, Any] = {}  # the response object of the closing response.done
        self.committed: list[str] = []  # item ids, in order
        self.transcripts: dict[str, str] = {}
        self.events: list[tuple[str, float]] = []
        self.marks: dict[str, float] = {}  # perf_counter of notable events, by name
        self.text: list[str] = []
        self.audio = bytearray()
        self.output_rate = RATE
        self.silence_duration_ms: int | None = None

    async def run(self, url: str, update: dict[str, Any] | None, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            # proxy=None: a local voice server is never behind the environment's HTTP proxy.
            ws = await connect(
                url, proxy=None, max_size=16 << 20, open_timeout=10, additional_headers=headers
            )
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            reason = str(exc) or type(exc).__name__
            raise TalkConnectionError(
                f"could not connect to {url}: {reason}. Is the server running? {START_HINT}"
            ) from None
        try:
            async with ws:
                await self._expect(ws, "session.created")
                if update is not None:
                    await ws.send(json.dumps(update))
                    await self._expect(ws, "session.updated")
                sender = asyncio.create_task(self._send(ws))
                try:
                    await self._receive(ws)
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
        except ConnectionClosed as exc:
            raise TalkConnectionError(f"the server closed the connection ({exc})") from None

    async def _expect(self, ws: ClientConnection, wanted: str) -> None:
        async for raw in ws:
            if self._handle(raw)["type"] == wanted:
                return
        raise TalkConnectionError(f"the server closed the connection before {wanted}")

    async def _send(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        total_s = len(self.frames) * FRAME_MS / 1000
        start = loop.time()
        for i, frame in enumerate(self.frames):
            # fast: still yield between frames so the receiver keeps up.
            await asyncio.sleep(0 if self.fast else max(0.0, start + i * FRAME_MS / 1000 - loop.time()))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64encode_audio(frame)}))
            if i == self.speech_end:
                self.t_speech_end = time.perf_counter()
            if i % 5 == 4 or i == len(self.frames) - 1:
                self.say(f"sending {(i + 1) * FRAME_MS / 1000:.1f}/{total_s:.1f} s")
        silence = json.dumps(
            {"type": "input_audio_buffer.append", "audio": b64encode_audio(bytes(FRAME_BYTES))}
        )
        # Silence carries on the recording's real-time schedule (after --fast: from now).
        start = loop.time() if self.fast else start + len(self.frames) * FRAME_MS / 1000
        while self.silence_frames < self.max_silence_frames:
            await asyncio.sleep(max(0.0, start + self.silence_frames * FRAME_MS / 1000 - loop.time()))
            if self.active_response is not None or self.done:
                return  # the server has found the end of the turn
            await ws.send(silence)
            self.silence_frames += 1
            if self.silence_frames % 5 == 0:
                self.say(f"sent {total_s:.1f} s + {self.silence_frames * FRAME_MS / 1000:.1f} s silence")

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            if self._handle(raw)["type"] == "response.done" and self.done:
                break
        else:
            raise TalkConnectionError("the server closed the connection before response.done")
        # The transcription of the user's turn may trail the reply; give it a moment.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._await_transcripts(ws), TRANSCRIPT_GRACE_S)

    async def _await_transcripts(self, ws: ClientConnection) -> None:
        while any(item not in self.transcripts for item in self.committed):
            self._handle(await ws.recv())

    def _handle(self, raw: str | bytes) -> dict[str, Any]:
        """Parse, log and act on one server event; return it."""
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise TalkError(f"the server sent a message that is not a JSON object: {raw!r:.200}")
        kind = str(event.setdefault("type", "?"))
        now = time.perf_counter()
        self.events.append((kind, now))
        if kind == "error":
            raise TalkServerError(ServerError.model_validate(event.get("error") or {}))
        if kind in ("session.created", "session.updated"):
            self._apply_session(event.get("session") or {})
        elif kind == "input_audio_buffer.speech_stopped":
            self.marks["speech_stopped"] = now
        elif kind == "input_audio_buffer.committed" and event.get("item_id"):
            self.committed.append(str(event["item_id"]))
        elif kind.startswith("conversation.item.input_audio_transcription."):
            if kind.endswith(".completed"):
                self.marks["transcript"] = now
            if kind.endswith((".completed", ".failed")):
                self.transcripts[str(event.get("item_id"))] = str(event.get("transcript") or "")
        elif kind == "response.created":
            self._reset_response((event.get("response") or {}).get("id") or "?")
            self.marks["response_created"] = now
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            self.marks.setdefault("first_text", now)
            self.text.append(str(event.get("delta") or ""))
        elif kind == "response.output_audio.delta":
            self.marks.setdefault("first_audio", now)
            try:
                self.audio += b64decode_audio(str(event.get("delta") or ""))
            except ValueError as exc:
                raise TalkError(f"the server sent bad reply audio: {exc}") from None
            self.say(f"receiving reply: {len(self.audio) / 2 / self.output_rate:.1f} s of audio")
        elif kind == "response.done":
            self._on_done(event.get("response") or {}, now)
        return event

    def _on_done(self, response: dict[str, Any], now: float) -> None:
        if response.get("status") == "failed":
            error = (response.get("status_details") or {}).get("error") or {}
            raise TalkServerError(
                ServerError(
                    type=str(error.get("type") or "response_failed"),
                    code=error.get("code"),
                    message=str(error.get("message") or "the response failed"),
                )
            )
        if response.get("status") == "cancelled" or self.t_speech_end is None:
            # Cancelled by more speech, or a reply to a pause mid-recording: the speech still to
            # be sent starts another turn, so wait for the response that answers all of it.
            self._reset_response(None)
            return
        self.done = True
        self.marks["response_done"] = now
        self.final = response

    def _reset_response(self, response_id: str | None) -> None:
        self.active_response = response_id
        self.text.clear()
        self.audio.clear()
        for key in ("first_audio", "first_text"):
            self.marks.pop(key, None)

    def _apply_session(self, session: dict[str, Any]) -> None:
        audio = session.get("audio") or {}
        turn_detection = (audio.get("input") or {}).get("turn_detection") or session.get("turn_detection")
        if isinstance(turn_detection, dict) and "silence_duration_ms" in turn_detection:
            self.silence_duration_ms = int(turn_detection["silence_duration_ms"])
        out_format = (audio.get("output") or {}).get("format") or {}
        if isinstance(out_format, dict) and out_format.get("rate"):
            self.output_rate = int(out_format["rate"])


async def talk(
    path_or_pcm: str | Path | bytes,
    *,
    url: str = DEFAULT_URL,
    fast: bool = False,
    instructions: str | None = None,
    voice: str | None = None,
    timeout: float = 60.0,
    sample_rate: int = RATE,
    threshold_dbfs: float = VOICED_DBFS,
    max_trailing_silence_s: float = 5.0,
    progress: Progress | None = None,
    api_key: str | None = None,
) -> TalkResult:
    """Speak one recording to a Realtime server and collect the spoken reply.

    The recording is streamed in 20 ms ``input_audio_buffer.append`` frames, paced in real time
    unless ``fast``. Then silence frames follow (always paced, at most ``max_trailing_silence_s``)
    so server VAD can find the end of speech even in a recording without trailing silence; they
    stop once a response is under way. The turn ends at the first ``response.done`` that was not
    cancelled (a response cancelled by more speech from the recording is followed by another).

    Args:
        path_or_pcm: A 16-bit WAV file, or mono PCM16 bytes at ``sample_rate``.
        url: The server's Realtime WebSocket URL.
        fast: Send the recording as fast as possible instead of in real time.
        instructions: Sent in a ``session.update`` before the audio, when given.
        voice: Output voice, sent in the same ``session.update``, when given.
        timeout: Limit in seconds for the whole turn, connection included.
        sample_rate: Rate of ``path_or_pcm`` when it is bytes.
        threshold_dbfs: Frames louder than this count as voiced.
        max_trailing_silence_s: Most silence to stream after the recording.
        progress: Called with a one-line status, several times a second while streaming.
        api_key: Sent as ``Authorization: Bearer`` when the server requires a key.

    Returns:
        The transcripts, reply audio and timings.

    Raises:
        TalkConnectionError: The server is unreachable or dropped the connection.
        TalkServerError: The server sent an ``error`` event or the response failed.
        TalkTimeout: The turn did not finish within ``timeout``.
        ValueError: The input is not a 16-bit WAV file.
    """
    pcm = load_input(path_or_pcm, sample_rate)
    frames = [pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES)]
    voiced = last_voiced_frame(pcm, threshold_dbfs)
    # Without a voiced frame the turn is timed from the end of the recording.
    speech_end = voiced if voiced is not None else len(frames) - 1
    turn = _Turn(frames, speech_end, fast, max_trailing_silence_s, progress or (lambda _line: None))
    try:
        await asyncio.wait_for(turn.run(url, _session_update(instructions, voice), api_key), timeout)
    except TimeoutError:
        last = turn.events[-1][0] if turn.events else "none"
        raise TalkTimeout(f"no complete reply within {timeout:g} s (last server event: {last})") from None
    return _result(turn, pcm, voiced)


def _session_update(instructions: str | None, voice: str | None) -> dict[str, Any] | None:
    if instructions is None and voice is None:
        return None
    session: dict[str, Any] = {"type": "realtime"}
    if instructions is not None:
        session["instructions"] = instructions
    if voice is not None:
        session["audio"] = {"output": {"voice": voice}}
    return {"type": "session.update", "session": session}


def _assistant_text(turn: _Turn) -> str:
    if turn.text:
        return "".join(turn.text)
    # No deltas: fall back to the transcript in the response's output items.
    parts = []
    for item in turn.final.get("output") or []:
        for content in (item or {}).get("content") or []:
            parts.append(str((content or {}).get("transcript") or (content or {}).get("text") or ""))
    return "".join(parts)


def _result(turn: _Turn, pcm: bytes, voiced: int | None) -> TalkResult:
    t0 = turn.t_speech_end if turn.t_speech_end is not None else time.perf_counter()

    def since(name: str) -> float | None:
        t = turn.marks.get(name)
        return None if t is None else round((t - t0) * 1000, 1)

    order = turn.committed + [i for i in turn.transcripts if i not in turn.committed]
    metadata = {str(k): str(v) for k, v in (turn.final.get("metadata") or {}).items()}
    return TalkResult(
        user_transcript=" ".join(t.strip() for i in order if (t := turn.transcripts.get(i, "")).strip()),
        assistant_text=_assistant_text(turn).strip(),
        reply_pcm16=bytes(turn.audio),
        reply_rate=turn.output_rate,
        response_id=turn.final.get("id") or turn.active_response,
        response_status=turn.final.get("status"),
        input_s=len(pcm) / 2 / RATE,
        speech_end_s=None if voiced is None else (voiced + 1) * FRAME_MS / 1000,
        trailing_silence_s=turn.silence_frames * FRAME_MS / 1000,
        silence_duration_ms=turn.silence_duration_ms,
        client=ClientTimings(
            voice_response_latency_ms=since("first_audio"),
            speech_stopped_ms=since("speech_stopped"),
            transcript_ms=since("transcript"),
            response_created_ms=since("response_created"),
            first_text_ms=since("first_text"),
            response_done_ms=since("response_done"),
        ),
        server_timings_ms=parse_server_timings(metadata),
        server_metadata=metadata,
        events=[ReceivedEvent(type=kind, t_ms=round((t - t0) * 1000, 1)) for kind, t in turn.events],
    )
