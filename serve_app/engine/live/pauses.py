"""Finals at pauses: the early final decode a live session starts at the VAD's pause hint.

A mixin of :class:`~serve_app.engine.live.session.LiveTranscription`, kept apart because it is
the one subtle part of the policy: when the VAD hints that speech paused, the words so far
are decoded as final (or taken from a draft that already heard them all). If speech stays
paused, they are final as soon as that decode is back; if it resumes after a clear pause,
they are final up to the pause; after a short one the decode is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from serve_app.engine.events import TimedWord
from serve_app.engine.input_buffer import InputBuffer
from serve_app.engine.live.settings import LivePolicy, Utterance

TAIL_PAD_MS = 150  # audio kept after the VAD's speech end: Silero marks the end a little early


class PauseFinals:
    """The pause-hint half of the streaming policy (see the module docstring)."""

    _open: Utterance | None
    _audio: InputBuffer
    _policy: LivePolicy
    _kick: Callable[[], None]
    _final_words: Callable[[Utterance, float], Awaitable[list[TimedWord] | None]]
    _label: Callable[..., Awaitable[list[TimedWord]]]
    _publish_final: Callable[..., Awaitable[None]]

    def _resumed(self, utterance: Utterance, resume_ms: float) -> None:
        """Speech came back: the speculative final missed the rest of the utterance.

        After a clear pause (``settle_pause_ms``) its words are still final: they are a whole
        phrase, decoded with the silence after it.
        """
        speculation, utterance.speculation = utterance.speculation, None
        pause = resume_ms - utterance.speech_end_ms
        if (
            speculation is not None
            and self._policy.early_finals
            and utterance.pause_final is None
            and pause >= self._policy.settle_pause_ms
        ):
            utterance.pause_final = (speculation, utterance.speech_end_ms + pause / 2)

    def _speculate(self, utterance: Utterance, end_ms: float) -> None:
        """Start the final decode early, at the VAD's pause hint.

        When a draft already heard all the speech (it decodes audio past the VAD's speech
        end, now or before), its words are the final decode: the same model on the same audio,
        so only the speakers are left to find, and no second decode waits behind the first.
        """
        end_ms = min(end_ms, self._audio.end_ms)
        utterance.speculation_end_ms = end_ms
        heard_all = end_ms - TAIL_PAD_MS
        if utterance.inflight is not None and utterance.inflight_head_ms >= heard_all:
            work = self._inflight_words(utterance, utterance.inflight, end_ms)
        elif utterance.draft and utterance.draft_head_ms >= heard_all:
            work = self._drafted_words(utterance, list(utterance.draft), end_ms)
        else:
            work = self._final_words(utterance, end_ms)
        task = asyncio.create_task(work)
        utterance.speculation = task
        task.add_done_callback(lambda _: self._speculation_done(utterance, task))

    def _speculation_done(self, utterance: Utterance, task: asyncio.Task[list[TimedWord] | None]) -> None:
        """The early final decode is back and speech has not resumed: its words are final now.

        By then the pause has lasted ``pause_ms`` plus a decode, a clear break; not waiting for
        the VAD to confirm the end of the utterance is what makes finals fast.
        """
        if (
            self._policy.early_finals
            and utterance is self._open
            and utterance.speculation is task
            and utterance.pause_final is None
        ):
            utterance.speculation = None
            utterance.pause_final = (task, utterance.speculation_end_ms)
            self._kick()

    async def _settle_pause(self, utterance: Utterance) -> None:
        """Publish the words of a speculative final decoded over a pause (``pause_final``)."""
        assert utterance.pause_final is not None
        task, cut_ms = utterance.pause_final
        words: list[TimedWord] | None = None
        with contextlib.suppress(asyncio.CancelledError):
            words = await task
        utterance.pause_final = None
        if cut_ms <= utterance.settled_ms:
            return
        words = [
            w
            for w in words or []
            if w.end_ms <= cut_ms and (w.start_ms + w.end_ms) / 2 > utterance.settled_ms
        ]
        if words:
            await self._publish_final(utterance, words, utterance.settled_ms, cut_ms)
        utterance.settled_ms = cut_ms
        utterance.cuts.append(cut_ms)
        utterance.draft = []

    async def _inflight_words(
        self, utterance: Utterance, heard: asyncio.Future[list[TimedWord] | None], end_ms: float
    ) -> list[TimedWord] | None:
        """The words of the draft being decoded now, as final words; a decode if it fails."""
        words = await heard
        if words is None:
            return await self._final_words(utterance, end_ms)
        return await self._label(words, utterance.settled_ms, end_ms, utterance)

    async def _drafted_words(
        self, utterance: Utterance, words: list[TimedWord], end_ms: float
    ) -> list[TimedWord] | None:
        """A draft's words as final words: with speakers when diarization is on."""
        return await self._label(words, utterance.settled_ms, end_ms, utterance)
