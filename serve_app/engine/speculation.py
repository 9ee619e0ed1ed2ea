"""Speculative turns: start answering during the end-of-turn silence, speak only if it ends.

Server VAD waits ``silence_duration_ms`` (default 500 ms) of silence before it ends a turn.
That wait is pure latency, so voxray uses it: when the VAD first reports a short pause
(``SpeechPaused``, ~200 ms), the Turn transcribes the utterance so far and starts the
reply — LLM and TTS included — behind a closed :class:`EventGate`. If the turn then ends
(``SpeechStopped``), the gate opens and the events already made go out at once; if the user
goes on speaking (``SpeechResumed``), everything is cancelled and nothing was ever sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from deployments.types import Transcript
from serve_app.engine.events import EngineEvent, EventSink
from serve_app.engine.response import ResponseRun


class EventGate:
    """Holds events until ``open`` (then forwards them in order) or drops them on ``discard``."""

    def __init__(self, emit: EventSink) -> None:
        self._emit = emit
        self._held: list[EngineEvent] = []
        self._open = False
        self._discarded = False

    @property
    def is_open(self) -> bool:
        """Whether events now go straight through."""
        return self._open

    async def emit(self, event: EngineEvent) -> None:
        """Forward ``event`` if open, else hold it (or drop it once discarded)."""
        if self._discarded:
            return
        if self._open:
            await self._emit(event)
        else:
            self._held.append(event)

    async def open(self) -> None:
        """Send everything held, in order, then let events through.

        Events emitted while the backlog is flushing join the backlog, so order is kept.
        """
        while self._held and not self._discarded:
            await self._emit(self._held.pop(0))
        self._open = not self._discarded

    def discard(self) -> None:
        """Drop everything held and anything emitted later."""
        self._discarded = True
        self._held.clear()


@dataclass
class Speculation:
    """One speculative reply: its transcription, gated reply and timings.

    Attributes:
        speech_end_at: Wall-clock (``perf_counter``) time the user stopped speaking.
        asr: The transcription of the utterance up to the pause.
        gate: Holds the reply's events until the turn is confirmed.
        task: Runs the reply (after ``asr``); ``None`` until started.
        run: The reply, once the transcript is in.
        confirmed: The turn really ended; the reply is the turn's own.
    """

    speech_end_at: float
    asr: asyncio.Task[Transcript | Exception]
    gate: EventGate
    task: asyncio.Task[None] | None = None
    run: ResponseRun | None = None
    confirmed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    async def cancel(self) -> None:
        """Drop the speculation: nothing it made is sent, and its model calls are cancelled."""
        self.gate.discard()
        tasks = [t for t in (self.task, self.asr) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
