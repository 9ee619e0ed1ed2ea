"""The simulated users of the load benchmark (``bench.load``): one WebSocket session each.

A :class:`SessionClient` behaves like a person at a microphone: its
:class:`~bench.load_microphone.Microphone` sends a 20 ms frame every 20 ms for the whole session
(speech when the person talks, silence otherwise), the server's VAD ends each turn, and after
the reply has played the person pauses (jittered) and asks the next question. In a barge-in turn
the person starts talking over the reply shortly after it starts. Arrival times of the server's
events are turned into one :class:`~bench.load_report.TurnRecord` per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

# Utterance is imported here for use and so that `from bench.load_client import Utterance`
# (bench.load, bench.soak, the tests) keeps working.
from bench.load_microphone import Microphone, Utterance
from bench.load_report import LoadSettings, TurnRecord, overhead, playback_starvation
from serve_app.client.talk import RATE
from serve_app.protocols.realtime.wire import parse_timings

HUNG_UP = "hung up by the client"  # error prefix of a turn the client ended on purpose (HangUp)


@dataclass(frozen=True)
class HangUp:
    """Hang up in turn ``turn``, ``after_s`` after its first reply audio; the session ends there.

    ``abrupt`` drops the TCP connection without a close frame (a phone losing signal, a killed
    tab) instead of sending one. Used by the soak benchmark's churn.
    """

    turn: int
    after_s: float
    abrupt: bool


@dataclass
class Trace:
    """What the client saw of one response."""

    created: float
    deltas: list[tuple[float, float]] = field(default_factory=list)  # (arrival, audio seconds)
    done: float | None = None
    status: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Turn:
    """Client-side state of the turn in progress; the receiver fills it in."""

    barge_in: bool
    hang_up: bool = False
    t0: float | None = None  # send time of the question's last voiced frame
    t0_audio_ms: float | None = None  # audio time at the end of that frame
    stopped_audio_ms: float | None = None  # speech_stopped's audio_end_ms
    t_barge: float | None = None  # send time of the interruption's first voiced frame
    t_barge_end: float | None = None
    responses: dict[str, Trace] = field(default_factory=dict)
    main: str | None = None  # the first response to play audio after t0
    final: str | None = None  # the response that ended the turn
    speech_stopped: float | None = None
    transcript: float | None = None
    error: str | None = None
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, error: str) -> None:
        """End the turn as failed (the first error wins)."""
        self.error = self.error or error
        self.finished.set()


class SessionClient:
    """One simulated user: a connection, a microphone, a receiver, and M turns."""

    def __init__(
        self,
        index: int,
        settings: LoadSettings,
        questions: Sequence[Utterance],
        interruption: Utterance,
        hang_up: HangUp | None = None,
    ):
        self.index, self.settings, self.hang_up = index, settings, hang_up
        self.questions, self.interruption = questions, interruption
        self.rng = random.Random(settings.seed * 100_003 + index)
        self.silence_duration_ms: int | None = None
        self.output_rate = RATE
        self.turn: Turn | None = None
        self.connected = False
        self.closed: str | None = None
        self.mic: Microphone | None = None
        self._ws: ClientConnection | None = None

    async def run(self, on_turn: Callable[[TurnRecord], None]) -> list[TurnRecord]:
        """Connect after this session's ramp delay, run every turn, and return their records."""
        s = self.settings
        await asyncio.sleep(s.ramp_s * self.index / max(1, s.sessions))
        records: list[TurnRecord] = []
        try:
            # proxy=None: a local voice server is never behind the environment's HTTP proxy.
            ws = await connect(s.url, proxy=None, max_size=16 << 20, open_timeout=15)
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            for t in range(s.turns):
                question = self.questions[(self.index + t) % len(self.questions)].text
                records.append(
                    self._record(t, question, False, error=f"connect failed: {exc or type(exc).__name__}")
                )
                on_turn(records[-1])
            return records
        self.connected, self._ws = True, ws
        self.mic = Microphone(ws)
        receiver = asyncio.create_task(self._receive(ws))
        mic = asyncio.create_task(self.mic.run())
        try:
            for t in range(s.turns):
                barge = s.barge_in_every > 0 and (t + 1) % s.barge_in_every == 0
                record = await self._run_turn(t, barge)
                records.append(record)
                on_turn(record)
                if record.error is not None and record.error.startswith(HUNG_UP):
                    break
        finally:
            for task in (mic, receiver):
                task.cancel()
            await asyncio.gather(mic, receiver, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        return records

    def _record(self, t: int, question: str, barge: bool, **fields: Any) -> TurnRecord:
        return TurnRecord(
            session=self.index, turn=t, question=question, barge_in=barge,
            silence_duration_ms=self.silence_duration_ms, **fields,
        )  # fmt: skip

    async def _run_turn(self, t: int, barge: bool) -> TurnRecord:
        s = self.settings
        question = self.questions[(self.index + t) % len(self.questions)]
        if self.closed is not None:
            return self._record(t, question.text, barge, error=f"connection closed: {self.closed}")
        hang_up = self.hang_up is not None and self.hang_up.turn == t
        turn = self.turn = Turn(barge_in=barge, hang_up=hang_up)
        assert self.mic is not None
        mic = self.mic

        def on_last_voiced(now: float) -> None:
            turn.t0, turn.t0_audio_ms = now, mic.audio_ms

        mic.say(question, on_last_voiced=on_last_voiced)
        try:
            await asyncio.wait_for(self._converse(turn), s.turn_timeout_s)
        except TimeoutError:
            turn.fail(f"timeout: no finished reply within {s.turn_timeout_s:g} s")
        self.turn = None
        record = self._measure(t, question.text, turn)
        if turn.hang_up:
            return record  # the session is over: no listening, no pause
        if record.ok:  # the person listens to the end of the reply, then pauses before the next question
            end = playback_starvation(self._deltas(turn, turn.final), s.jitter_buffer_ms / 1000).playback_end
            await asyncio.sleep(max(0.0, (end or 0.0) - time.perf_counter()))
        await asyncio.sleep(s.pause_s * self.rng.uniform(0.5, 1.5))
        return record

    async def _converse(self, turn: Turn) -> None:
        if turn.hang_up:
            await self._hang_up(turn)
            return
        if turn.barge_in:
            await turn.first_audio.wait()
            if not turn.finished.is_set():
                await asyncio.sleep(self.settings.barge_in_after_s)
                assert self.mic is not None
                self.mic.say(
                    self.interruption,
                    lambda now: setattr(turn, "t_barge", now),
                    lambda now: setattr(turn, "t_barge_end", now),
                )
        await turn.finished.wait()

    async def _hang_up(self, turn: Turn) -> None:
        """Wait for the reply to start playing, then leave while its audio is still arriving."""
        assert self.hang_up is not None and self._ws is not None
        waits = [asyncio.ensure_future(e.wait()) for e in (turn.first_audio, turn.finished)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if turn.finished.is_set():
            return  # failed before any reply audio: nothing to hang up on
        await asyncio.sleep(self.hang_up.after_s)
        how = "abrupt: no close frame" if self.hang_up.abrupt else "close frame"
        turn.fail(f"{HUNG_UP} mid-reply ({how})")  # first, so the receiver's "connection closed" loses
        if self.hang_up.abrupt:
            self._ws.transport.abort()
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)

    def _deltas(self, turn: Turn, response_id: str | None) -> list[tuple[float, float]]:
        trace = turn.responses.get(response_id or "")
        return trace.deltas if trace else []

    def _measure(self, t: int, question: str, turn: Turn) -> TurnRecord:
        """Turn the collected arrival times into a record (client times relative to ``t0``)."""
        s = self.settings
        record = self._record(t, question, turn.barge_in, error=turn.error)
        t0 = turn.t0
        main = turn.responses.get(turn.main or "")
        if t0 is None or main is None or not main.deltas:
            record.error = record.error or "no reply audio"
            return record

        def ms(when: float | None, origin: float | None = t0) -> float | None:
            return None if when is None or origin is None else round((when - origin) * 1000, 1)

        record.voice_latency_ms = ms(main.deltas[0][0])
        record.speech_stopped_ms = ms(turn.speech_stopped)
        if turn.stopped_audio_ms is not None and turn.t0_audio_ms is not None:
            record.endpoint_audio_ms = round(turn.stopped_audio_ms - turn.t0_audio_ms, 1)
        record.transcript_ms = ms(turn.transcript)
        record.response_status = main.status
        record.response_done_ms = ms(main.done)
        record.server_ms = parse_timings(main.metadata)
        record.continuity = playback_starvation(main.deltas, s.jitter_buffer_ms / 1000)
        record.overhead_ms = overhead(record, s.profile)
        if turn.barge_in and turn.t_barge is not None:
            record.barge_in_status = main.status
            if main.status == "cancelled":
                # Audio still arriving after the interruption began is what the user hears over it.
                record.barge_in_latency_ms = max(0.0, ms(main.deltas[-1][0], turn.t_barge) or 0.0)
                record.barge_in_done_ms = ms(main.done, turn.t_barge)
            reply = turn.responses.get(turn.final or "")
            if reply is not None and reply is not main and reply.deltas:
                record.barge_in_reply_ms = ms(reply.deltas[0][0], turn.t_barge_end)
        elif turn.barge_in and record.error is None:
            record.error = "barge-in not sent: the reply ended first"
        record.ok = record.error is None
        return record

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._handle(json.loads(raw), time.perf_counter())
            self.closed = "by the server"
        except ConnectionClosed as exc:
            self.closed = str(exc)
        except ValueError as exc:
            self.closed = f"bad message: {exc}"
        if self.turn is not None:
            self.turn.fail(f"connection closed: {self.closed}")

    def _handle(self, event: dict[str, Any], now: float) -> None:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            self._apply_session(event.get("session") or {})
            return
        turn = self.turn
        if turn is None:
            return  # between turns: nothing is measured
        if kind == "response.created":
            turn.responses[(event.get("response") or {}).get("id", "?")] = Trace(created=now)
        elif kind == "response.output_audio.delta":
            trace = turn.responses.get(event.get("response_id", ""))
            if trace is None:
                return
            b64 = event.get("delta") or ""
            n_bytes = len(b64) * 3 // 4 - b64[-2:].count("=")  # decoding is not needed to count
            trace.deltas.append((now, n_bytes / 2 / self.output_rate))
            if turn.main is None and turn.t0 is not None and trace.created >= turn.t0:
                turn.main = event["response_id"]
                turn.first_audio.set()
        elif kind == "response.done":
            self._on_done(turn, event.get("response") or {}, now)
        elif kind == "input_audio_buffer.speech_stopped":
            if turn.t0 is not None and turn.speech_stopped is None:
                turn.speech_stopped = now
                if isinstance(event.get("audio_end_ms"), int | float):
                    turn.stopped_audio_ms = float(event["audio_end_ms"])
        elif kind == "conversation.item.input_audio_transcription.completed":
            if turn.t0 is not None and turn.transcript is None:
                turn.transcript = now
        elif kind == "error":
            error = event.get("error") or {}
            turn.fail(
                f"server error: {error.get('code') or error.get('type')}: {error.get('message', '')}"[:200]
            )

    def _on_done(self, turn: Turn, response: dict[str, Any], now: float) -> None:
        trace = turn.responses.get(response.get("id", ""))
        if trace is None:
            return
        trace.done, trace.status = now, response.get("status")
        trace.metadata = {str(k): str(v) for k, v in (response.get("metadata") or {}).items()}
        if trace.status == "failed":
            error = (response.get("status_details") or {}).get("error") or {}
            turn.fail(f"response failed: {error.get('message', '')}"[:200])
            return
        # The turn ends with the first reply that was not cancelled and answers the last thing
        # said: the question, or in a barge-in turn the interruption.
        anchor = turn.t_barge if turn.barge_in else turn.t0
        if trace.status != "cancelled" and anchor is not None and trace.created >= anchor:
            turn.final = response.get("id")
            turn.finished.set()

    def _apply_session(self, session: dict[str, Any]) -> None:
        audio = session.get("audio") or {}
        detection = (audio.get("input") or {}).get("turn_detection") or session.get("turn_detection")
        if isinstance(detection, dict) and "silence_duration_ms" in detection:
            self.silence_duration_ms = int(detection["silence_duration_ms"])
        rate = ((audio.get("output") or {}).get("format") or {}).get("rate")
        if rate:
            self.output_rate = int(rate)
