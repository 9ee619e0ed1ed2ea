"""One turn of a conversation: the user's utterance and the reply to it.

A :class:`Turn` moves through an explicit state machine::

    listening → user_speaking → thinking → speaking → done
                      │             │          │
                      └─────────────┴──────────┴────→ cancelled

and owns all the work it starts inside one ``asyncio.TaskGroup``: the transcription of its
utterance, its optional speculation (transcript and reply behind a gate, see
``speculation.py``) and its reply. Barge-in is :meth:`Turn.cancel`: the reply stops at once
while the user's transcript still arrives; :meth:`Turn.close` stops everything.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from deployments.types import ChatMessage, Transcript
from serve_app.config import AppConfig
from serve_app.engine.conversation import Conversation, Item
from serve_app.engine.events import (
    EngineEvent,
    EventSink,
    InputCommitted,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    TranscriptPartial,
)
from serve_app.engine.model_clients import ModelClients
from serve_app.engine.response import ReplyOverrides, ResponseRun, assistant_item, plan_response
from serve_app.engine.settings import SessionSettings
from serve_app.engine.speculation import EventGate, Speculation
from serve_app.engine.transcription import Transcriber

logger = logging.getLogger("voxray")


class TurnPhase(enum.Enum):
    """Where a turn is (see the module docstring)."""

    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether the turn is over."""
        return self in (TurnPhase.DONE, TurnPhase.CANCELLED)


_NEXT: dict[TurnPhase, frozenset[TurnPhase]] = {
    TurnPhase.LISTENING: frozenset(
        {TurnPhase.USER_SPEAKING, TurnPhase.THINKING, TurnPhase.DONE, TurnPhase.CANCELLED}
    ),
    TurnPhase.USER_SPEAKING: frozenset({TurnPhase.THINKING, TurnPhase.DONE, TurnPhase.CANCELLED}),
    TurnPhase.THINKING: frozenset({TurnPhase.SPEAKING, TurnPhase.DONE, TurnPhase.CANCELLED}),
    TurnPhase.SPEAKING: frozenset({TurnPhase.DONE, TurnPhase.CANCELLED}),
    TurnPhase.DONE: frozenset(),
    TurnPhase.CANCELLED: frozenset(),
}


class TurnStateError(RuntimeError):
    """A transition the state machine does not allow (a bug in the caller)."""


@dataclass
class TurnContext:
    """What every turn of one session shares.

    Attributes:
        config: The app config.
        models: The model endpoints.
        settings: The session's settings (read when a reply is planned).
        conversation: The session's conversation.
        transcriber: Runs ASR and announces transcripts.
        publish: The session's event sink (adapter and recorder).
        observe: The measurement sink (recorder only, never gated).
    """

    config: AppConfig
    models: ModelClients
    settings: SessionSettings
    conversation: Conversation
    transcriber: Transcriber
    publish: EventSink
    observe: EventSink


@dataclass
class Utterance:
    """A stretch of committed user audio: input-rate PCM16 and its stream times."""

    audio: bytes
    start_ms: float
    end_ms: float


class Turn:
    """One utterance and its reply. Create with :meth:`open`.

    Args:
        ctx: The session's shared parts.
        item_id: The id the user item gets (a reply-only turn has no user item).
    """

    def __init__(self, ctx: TurnContext, item_id: str) -> None:
        self.item_id = item_id
        self.phase = TurnPhase.LISTENING
        self.history: list[TurnPhase] = [TurnPhase.LISTENING]  # every phase entered, in order
        self.transcript: asyncio.Task[Transcript | None] | None = None
        self._ctx = ctx
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._children: set[asyncio.Task[Any]] = set()
        self._speculation: Speculation | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._run: ResponseRun | None = None
        self._cancelled = False

    @classmethod
    async def open(cls, ctx: TurnContext, item_id: str) -> Turn:
        """A new turn, listening, with its task group running."""
        turn = cls(ctx, item_id)
        ready = asyncio.Event()
        turn._runner = asyncio.create_task(turn._own_tasks(ready), name=f"turn-{item_id}")
        await ready.wait()
        return turn

    async def _own_tasks(self, ready: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                ready.set()
                await self._settled.wait()
        except Exception:  # children catch their own errors; this is a bug, not a client's problem
            logger.exception("turn %s: a task failed", self.item_id)

    # -- state -------------------------------------------------------------------------------

    def _enter(self, phase: TurnPhase) -> None:
        if phase is self.phase:
            return
        if phase not in _NEXT[self.phase]:
            raise TurnStateError(f"turn {self.item_id}: {self.phase.value} → {phase.value} is not allowed")
        self.phase = phase
        self.history.append(phase)
        self._check_settled()

    def _check_settled(self) -> None:
        if self.phase.ended and not any(not task.done() for task in self._children):
            self._settled.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        assert self._group is not None, "Turn.open() starts the group"
        task = self._group.create_task(coro, name=f"turn-{self.item_id}-{name}")
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.discard(task)
        self._check_settled()

    @property
    def replying(self) -> bool:
        """Whether this turn's reply is being generated or waited for."""
        return self._reply_task is not None and not self._reply_task.done()

    # -- the user's speech -------------------------------------------------------------------

    def user_started_speaking(self) -> None:
        """The VAD heard speech: the turn's utterance has begun."""
        self._enter(TurnPhase.USER_SPEAKING)

    def speculate(self, utterance: Utterance, speech_end_at: float) -> None:
        """At a pause: transcribe what was said so far and start the reply behind a closed gate."""
        ctx = self._ctx
        spec = Speculation(
            speech_end_at=speech_end_at,
            asr=self._spawn(ctx.transcriber.transcribe(utterance.audio), "speculative-asr"),
            gate=EventGate(self._reply_event),
        )
        spec.task = self._spawn(self._speculative_reply(spec, utterance), "speculative-reply")
        self._speculation = spec

    async def drop_speculation(self) -> None:
        """The user spoke on: cancel the speculative reply; nothing it made is sent."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            await speculation.cancel()

    async def _speculative_reply(self, spec: Speculation, utterance: Utterance) -> None:
        transcript = await asyncio.shield(spec.asr)
        if isinstance(transcript, Exception) or not transcript.text.strip():
            return  # a failed ASR is reported when (if) the turn is committed
        await self._ctx.publish(
            TranscriptPartial(self.item_id, transcript.text, utterance.start_ms, utterance.end_ms)
        )
        spec.timings["asr_ms"] = round(transcript.processing_s * 1000, 1)
        spec.timings["asr_done_ms"] = _ms_since(spec.speech_end_at)
        ctx = self._ctx
        plan = plan_response(
            ctx.settings, ctx.config, ctx.conversation, None, spec.speech_end_at, spec.timings
        )
        plan.messages.append(ChatMessage(role="user", content=transcript.text))
        spec.run = ResponseRun(ctx.models, plan, assistant_item(plan), spec.gate.emit, ctx.observe)
        if spec.confirmed:
            self._run = spec.run
        await spec.run.run()

    async def end_of_speech(
        self,
        utterance: Utterance,
        *,
        reply: bool,
        speech_end_at: float | None = None,
        timings: dict[str, float] | None = None,
        pending: list[asyncio.Task[Transcript | None]] | None = None,
    ) -> None:
        """The utterance is over (VAD or a client commit): make it a user item and maybe reply.

        Args:
            utterance: The committed audio.
            reply: Answer it once its transcript is in.
            speech_end_at: ``perf_counter`` time the user stopped speaking.
            timings: Stage timings known so far (endpointing).
            pending: Other utterances' transcriptions the reply must wait for.
        """
        started_at = speech_end_at or time.perf_counter()
        timings = timings or {}
        speculation, self._speculation = self._speculation, None
        if speculation is not None and reply:
            await self._confirm(speculation, utterance, timings)
            return
        if speculation is not None:
            await speculation.cancel()
        await self._commit(utterance, None)
        if reply:
            self._enter(TurnPhase.THINKING)
            self._reply_task = self._spawn(
                self._reply(started_at, timings, self.transcript, pending or [], None), "reply"
            )
        else:
            self._spawn(self._done_after_transcript(), "settle")

    async def _commit(self, utterance: Utterance, asr: asyncio.Task[Transcript | Exception] | None) -> None:
        """Announce the user item and start publishing its transcript."""
        ctx = self._ctx
        item = Item(id=self.item_id, role="user", modality="audio", status="in_progress")
        item.audio_ms = int(len(utterance.audio) / 2 / ctx.settings.input_rate * 1000)
        previous = ctx.conversation.add(item)
        await ctx.publish(InputCommitted(item.snapshot(), previous, utterance.start_ms, utterance.end_ms))
        asr = asr or self._spawn(ctx.transcriber.transcribe(utterance.audio), "asr")
        publish = ctx.transcriber.publish(item, asr, utterance.start_ms, utterance.end_ms)
        self.transcript = self._spawn(publish, "transcript")

    async def _done_after_transcript(self) -> None:
        if self.transcript is not None:
            await asyncio.gather(self.transcript, return_exceptions=True)
        if not self.phase.ended:
            self._enter(TurnPhase.DONE)

    async def _confirm(self, spec: Speculation, utterance: Utterance, timings: dict[str, float]) -> None:
        """The turn ended as guessed: commit it, then release the reply's held events."""
        spec.timings.update(timings)
        spec.confirmed = True
        self._enter(TurnPhase.THINKING)
        self._reply_task = spec.task
        self._spawn(self._settle_after_reply(), "settle")
        await self._commit(utterance, spec.asr)
        assert self.transcript is not None
        transcript = await asyncio.shield(self.transcript)
        if transcript is None:
            await spec.cancel()  # ASR failed: there is no reply to release
            return
        if spec.run is not None:
            self._run = spec.run
            self._ctx.conversation.add(spec.run.item)
            spec.run.released()
        await spec.gate.open()

    # -- the reply ---------------------------------------------------------------------------

    def reply_now(
        self,
        overrides: ReplyOverrides | None,
        pending: list[asyncio.Task[Transcript | None]],
        fixed_text: str | None = None,
    ) -> None:
        """Reply without new user speech (a client's request), after ``pending`` transcripts.

        Args:
            overrides: Settings for this reply only.
            pending: Transcripts still on their way, which the reply must wait for.
            fixed_text: Say exactly this (a greeting) instead of asking the LLM.
        """
        self._enter(TurnPhase.THINKING)
        reply = self._reply(time.perf_counter(), {}, None, pending, overrides, fixed_text)
        self._reply_task = self._spawn(reply, "reply")

    async def _reply(
        self,
        started_at: float,
        timings: dict[str, float],
        wait_for: asyncio.Task[Transcript | None] | None,
        pending: list[asyncio.Task[Transcript | None]],
        overrides: ReplyOverrides | None,
        fixed_text: str | None = None,
    ) -> None:
        """Wait for the user's transcript(s), then run one reply to completion or cancel."""
        try:
            if wait_for is not None:
                transcript = await asyncio.shield(wait_for)
                if transcript is None or not transcript.text.strip():
                    return  # nothing intelligible was said: no reply
                timings["asr_ms"] = round(transcript.processing_s * 1000, 1)
                timings["asr_done_ms"] = _ms_since(started_at)
            waiting = [t for t in pending if t is not wait_for and not t.done()]
            if waiting:  # answer only once every committed utterance has its transcript
                await asyncio.gather(*(asyncio.shield(t) for t in waiting), return_exceptions=True)
            ctx = self._ctx
            plan = plan_response(ctx.settings, ctx.config, ctx.conversation, overrides, started_at, timings)
            plan.fixed_text = fixed_text
            item = assistant_item(plan)
            ctx.conversation.add(item)
            self._run = ResponseRun(ctx.models, plan, item, self._reply_event, ctx.observe)
            await self._run.run()
        finally:
            self._reply_ended()

    async def _settle_after_reply(self) -> None:
        if self._reply_task is not None:
            await asyncio.gather(self._reply_task, return_exceptions=True)
        self._reply_ended()

    def _reply_ended(self) -> None:
        if not self.phase.ended:
            self._enter(TurnPhase.CANCELLED if self._cancelled else TurnPhase.DONE)

    async def _reply_event(self, event: EngineEvent) -> None:
        """The reply's events on their way out: they move the turn along."""
        if isinstance(event, ReplyAudio | ReplyText) and self.phase is TurnPhase.THINKING:
            self._enter(TurnPhase.SPEAKING)
        elif isinstance(event, ReplyDone) and event.status == "cancelled":
            self._cancelled = True
        await self._ctx.publish(event)

    async def cancel(self, reason: str) -> None:
        """Barge-in or a client's cancel: stop the reply now, wait until its last events are out.

        The user's transcript still arrives. Before the reply has said anything there is
        nothing to end, so its task is just cancelled.
        """
        task = self._reply_task
        if task is None or task.done():
            return
        self._cancelled = True
        if self._run is not None and self._run.item.status == "in_progress":
            self._run.cancel(reason)
        else:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def abandon(self) -> None:
        """The utterance will never be committed (input cleared): drop what was started."""
        await self.drop_speculation()
        if not self.phase.ended and self.transcript is None and self._reply_task is None:
            self._enter(TurnPhase.CANCELLED)

    async def close(self) -> None:
        """The session is ending: cancel everything this turn started and wait for it."""
        self._speculation = None
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def finished(self) -> None:
        """Wait until the turn has ended and its tasks are done."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)


def _ms_since(instant: float) -> float:
    return round((time.perf_counter() - instant) * 1000, 1)
