"""The engine of a live transcription session: audio in, partial and final words out.

Streaming policy on a whole-utterance ASR model (Whisper on the CPU, Parakeet batched across
streams on GPUs — the ASR deployment batches concurrent requests with ``@serve.batch``):

- Server VAD cuts the stream into utterances (``SpeechStarted`` … ``SpeechStopped``).
- While one is open, its audio is decoded again whenever ``partial_step_ms`` of new audio
  has arrived and the previous decode is back (decodes of one session never overlap, so a
  slow model lowers the partial rate instead of queueing). The words not final yet are a
  ``TranscriptPartial``.
- Words that two decodes in a row agree on are settled early (``WordsFinal``) when a clear
  pause follows them, or once they end more than ``max_delay`` before the newest audio. The
  decodes still start at the utterance's start (Whisper hears whole phrases), until the
  window passes ``max_window_ms``: then it starts at the last settled pause instead, so a
  decode's cost stays flat in long speech.
- The VAD's early pause hint starts the utterance's final decode (word times, speakers) at
  once; if speech does not resume, that result is the final when the VAD confirms the end,
  so the final costs the confirmation wait, not a decode after it.
- Audio that arrives faster than real time (a file) simply closes utterances faster than
  they are decoded: closed utterances are finalised in order before any new partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from serve_app.engine import events as ev
from serve_app.engine.audio.pcm import StreamResampler
from serve_app.engine.audio.vad import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.conversation import new_id
from serve_app.engine.events import (
    EventSink,
    TimedWord,
    TranscriptPartial,
    UtteranceEnded,
    WordsFinal,
)
from serve_app.engine.input_buffer import InputBuffer
from serve_app.engine.live.models import ASR_RATE, LiveModels
from serve_app.engine.live.settings import LivePolicy, LiveSettings, Utterance
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.live.words import agreed_prefix, settled_count, text_of, timed_words, unsettled_words

logger = logging.getLogger("voxray")

_TAIL_PAD_MS = 150  # audio kept after the VAD's speech end: Silero marks the end a little early
# Speech this long after a decode's last word means Whisper stopped early (see _stopped_early).
_EARLY_STOP_MS = 1500.0
# A window moved up to a settled point starts this much before it: a settled point inside a
# word (Whisper's word times are approximate) would otherwise cut the next word's start. The
# words already final in that margin are dropped again (unsettled_words).
_CONTEXT_MS = 300.0
# Words settled by max_delay go out in groups of up to this much more speech (settled_count).
_GROUP_MS = 1000.0
# A stretch of final words shorter than this is embedded with the speech before it in its
# utterance: too short a stretch says little about who is speaking.
_MIN_SPEAKER_AUDIO_MS = 1600.0


class LiveTranscription:
    """One live transcription session.

    Args:
        asr: Speech recognition (the ASR deployment's handle or a backend).
        labeller: Speaker labels for final words; ``None`` leaves them unlabelled.
        vad: A fresh VAD stream for this session.
        settings: What the client asked for.
        policy: The server's streaming policy.
        emit: Receives the engine events.
        vad_batcher: Shares VAD model calls with other sessions; ``None`` runs in place.
    """

    def __init__(
        self,
        asr: object,
        labeller: SpeakerLabeller | None,
        vad: VADStream,
        settings: LiveSettings,
        policy: LivePolicy,
        emit: EventSink,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.settings = settings
        self._labeller = labeller
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._policy = policy
        self._emit = emit
        self._audio = InputBuffer(ASR_RATE)
        self._models = LiveModels(asr, labeller, self._audio, emit)
        self._resampler = StreamResampler(settings.input_rate, ASR_RATE)
        self._open: Utterance | None = None
        self._closed: deque[Utterance] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._ended = False
        self._configure_vad()

    # -- client side ---------------------------------------------------------------------

    def configure(self, settings: LiveSettings) -> None:
        """New settings from the client (its rate cannot change mid-stream)."""
        settings.input_rate = self.settings.input_rate
        self.settings = settings
        if self._labeller is not None:
            self._labeller.max_speakers = settings.max_speakers
        self._configure_vad()

    def _configure_vad(self) -> None:
        p = self._policy
        silence = self.settings.silence_ms or p.silence_ms
        self._vad.configure(
            threshold=p.threshold,
            prefix_padding_ms=p.prefix_padding_ms,
            silence_duration_ms=silence,
            pause_ms=min(p.pause_ms, silence // 2),
        )

    @property
    def stream_ms(self) -> float:
        """Input audio received so far, in ms."""
        return self._vad.stream_ms

    async def append_audio(self, pcm16: bytes) -> None:
        """Take PCM16 mono input at ``settings.input_rate``."""
        if self._ended:
            return
        self._audio.append(self._resampler.process(pcm16))
        if self.settings.manual_commit:
            if self._open is None:
                await self._start_utterance(
                    self._audio.end_ms - len(pcm16) / 2 / self.settings.input_rate * 1000
                )
            self._kick()
            return
        rate = self.settings.input_rate
        if self._vad_batcher is not None:
            events = await self._vad_batcher.feed(self._vad, pcm16, rate)
        else:
            events = self._vad.feed(pcm16, rate)
        for event in events:
            if isinstance(event, SpeechStarted):
                await self._start_utterance(event.audio_start_ms)
            elif isinstance(event, SpeechPaused) and self._open is not None:
                self._open.paused = True
                self._open.speech_end_ms = event.speech_end_ms
                if not self._closed:
                    # Only in step with real time: with a backlog (a file sent fast) it would
                    # only pile up decodes that the backlog's finals must wait behind.
                    self._speculate(self._open, event.speech_end_ms + _TAIL_PAD_MS)
            elif isinstance(event, SpeechResumed) and self._open is not None:
                self._open.paused = False
                self._resumed(self._open, event.audio_ms)
            elif isinstance(event, SpeechStopped) and self._open is not None:
                await self._close_open(event.speech_end_ms + _TAIL_PAD_MS, forced=False)
        if self._open is None and not self._closed:
            self._audio.keep_last(self._policy.prefix_padding_ms + 500)
        self._kick()

    async def force_end_of_utterance(self) -> None:
        """End the utterance in progress now, as if the speaker had stopped."""
        if self._open is not None:
            await self._close_open(self._audio.end_ms, forced=True)
            self._vad.reset()
            self._kick()

    async def end_of_stream(self) -> None:
        """No more audio: finalise everything and return when every final is out."""
        if self._open is not None:
            await self._close_open(self._audio.end_ms, forced=False)
        self._ended = True
        self._kick()
        await self.wait_idle()

    async def wait_idle(self) -> None:
        """Return when nothing is left to decode."""
        self._kick()
        await self._idle.wait()

    async def close(self) -> None:
        """Stop all work (the connection is gone)."""
        self._ended = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    # -- utterances ------------------------------------------------------------------------

    async def _start_utterance(self, start_ms: float) -> None:
        utterance = Utterance(new_id("item"), start_ms, start_ms, settled_ms=start_ms)
        self._open = utterance
        await self._emit(ev.SpeechStarted(utterance.item_id, round(start_ms)))

    async def _close_open(self, end_ms: float, forced: bool) -> None:
        utterance = self._open
        assert utterance is not None
        self._open = None
        utterance.end_ms = min(end_ms, self._audio.end_ms)
        utterance.forced = forced
        if utterance.speculation is not None and utterance.speculation_end_ms < utterance.end_ms - 1:
            utterance.speculation = None  # it stopped short of the end
        self._closed.append(utterance)
        await self._emit(ev.SpeechStopped(utterance.item_id, round(utterance.end_ms)))

    def _resumed(self, utterance: Utterance, resume_ms: float) -> None:
        """Speech came back: the speculative final missed the rest of the utterance.

        After a clear pause (``settle_pause_ms``) its words are still final: they are a whole
        phrase, decoded with the silence after it.
        """
        speculation, utterance.speculation = utterance.speculation, None
        pause = resume_ms - utterance.speech_end_ms
        if (
            speculation is not None
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
        heard_all = end_ms - _TAIL_PAD_MS
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
        if utterance is self._open and utterance.speculation is task and utterance.pause_final is None:
            utterance.speculation = None
            utterance.pause_final = (task, utterance.speculation_end_ms)
            self._kick()

    # -- the worker ------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="live-transcription")
        self._idle.clear()
        self._wake.set()

    def _has_work(self) -> bool:
        return bool(self._closed) or self._draft_due() is not None

    def _draft_due(self) -> Utterance | None:
        utterance = self._open
        if utterance is None or utterance.speculation is not None or utterance.paused:
            return None  # a final decode is on its way, or nothing new is being said
        new_ms = self._audio.end_ms - max(utterance.draft_head_ms, utterance.window_ms)
        unsettled_ms = self._audio.end_ms - utterance.settled_ms
        wanted = self.settings.partials or unsettled_ms > self.settings.max_delay_ms
        return utterance if wanted and new_ms >= self._policy.partial_step_ms else None

    async def _work(self) -> None:
        while True:
            self._wake.clear()
            if self._closed:
                await self._finalise(self._closed[0])
                self._closed.popleft()
                self._trim()
                continue
            if self._open is not None and self._open.pause_final is not None:
                await self._settle_pause(self._open)
                continue
            utterance = self._draft_due()
            if utterance is not None:
                await self._draft(utterance)
                continue
            self._idle.set()
            await self._wake.wait()

    def _trim(self) -> None:
        keep = min(
            [u.window_ms for u in self._closed]
            + ([self._open.window_ms] if self._open else [])
            + [self._audio.end_ms - self._policy.prefix_padding_ms - 500]
        )
        self._audio.drop_until(keep)

    async def _draft(self, utterance: Utterance) -> None:
        self._slide_window(utterance)
        start, head = utterance.window_ms, self._audio.end_ms
        # A pause hint during this decode may take its words as the final (see _speculate).
        heard: asyncio.Future[list[TimedWord] | None] = asyncio.get_running_loop().create_future()
        utterance.inflight, utterance.inflight_head_ms = heard, head
        transcript = await self._models.decode(start, head, self.settings.language, draft=True)
        utterance.inflight = None
        usable = transcript is not None and bool(transcript.text.strip())
        heard.set_result(
            unsettled_words(timed_words(transcript, start, head - start), utterance) if usable else None
        )
        if transcript is None or utterance is not self._open or utterance.speculation is not None:
            return  # the utterance ended, or its final decode started, meanwhile
        if not transcript.text.strip() and utterance.draft:
            utterance.draft_head_ms = head  # a dropped draft: keep showing the last one
            return
        placed = timed_words(transcript, start, head - start)
        if self._stopped_early(utterance, placed, head):
            return  # decoded again from the last settled point, at once
        words = unsettled_words(placed, utterance)
        agreed = agreed_prefix(utterance.draft, words)
        utterance.draft, utterance.draft_head_ms = words, head
        settle, cut_ms = settled_count(
            words, agreed, head - self.settings.max_delay_ms, self._policy.settle_pause_ms, _GROUP_MS
        )
        if settle:
            await self._publish_final(utterance, words[:settle], utterance.settled_ms, cut_ms)
            utterance.settled_ms = cut_ms
            utterance.cuts.append(cut_ms)
            utterance.draft = words[settle:]
            words, agreed = words[settle:], agreed - settle
        if self.settings.partials and words:
            await self._emit(
                TranscriptPartial(
                    utterance.item_id,
                    text_of(words),
                    utterance.settled_ms,
                    head,
                    words=tuple(self._models.guess(words) if self.settings.diarization else words),
                    stable_words=agreed,
                )
            )

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

    def _stopped_early(self, utterance: Utterance, words: list[TimedWord], end_ms: float) -> bool:
        """Whether Whisper ended its transcript well before the audio; if so, move the window.

        On a window that holds two voices Whisper now and then stops after the first
        speaker's sentence. The words it gave are right, so the window moves up to the last
        settled point (the settled words are final already) and is decoded again.
        """
        last_end = max((w.end_ms for w in words), default=utterance.window_ms)
        later = [cut for cut in utterance.cuts if cut - _CONTEXT_MS > utterance.window_ms]
        if end_ms - last_end < _EARLY_STOP_MS or not later:
            return False
        utterance.window_ms = later[-1] - _CONTEXT_MS
        utterance.draft_head_ms = 0.0  # due again at once
        return True

    def _slide_window(self, utterance: Utterance) -> None:
        """Start decodes later when the window grew past ``max_window_ms``: at a settled point."""
        limit = self._audio.end_ms - self._policy.max_window_ms
        if utterance.window_ms >= limit:
            return
        later = [cut - _CONTEXT_MS for cut in utterance.cuts if cut - _CONTEXT_MS > utterance.window_ms]
        if later:
            # The latest settled point that brings the window under the limit, else the last one.
            fitting = [start for start in later if start >= limit]
            utterance.window_ms = fitting[0] if fitting else later[-1]

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

    async def _final_words(self, utterance: Utterance, end_ms: float) -> list[TimedWord] | None:
        self._slide_window(utterance)
        start, settled = utterance.window_ms, utterance.settled_ms
        # Who spoke is worked out beside what was said: the Speaker deployment embeds while ASR decodes.
        embedding = (
            asyncio.create_task(self._models.embed(self._speaker_start(utterance, settled, end_ms), end_ms))
            if self.settings.diarization
            else None
        )
        try:
            transcript = await self._models.decode(start, end_ms, self.settings.language, draft=False)
        finally:
            embeddings = await embedding if embedding is not None else None
        if transcript is None:
            return None
        placed = timed_words(transcript, start, end_ms - start)
        if self._stopped_early(utterance, placed, end_ms - _TAIL_PAD_MS):
            return await self._final_words(utterance, end_ms)
        words = unsettled_words(placed, utterance)
        if not self.settings.diarization:
            return words
        return self._models.apply(words, embeddings, self._speaker_start(utterance, settled, end_ms))

    async def _finalise(self, utterance: Utterance) -> None:
        assert utterance.end_ms is not None
        words: list[TimedWord] | None = None
        if utterance.pause_final is not None:  # closed before the worker got to it
            await self._settle_pause(utterance)
        if utterance.speculation is not None:
            with contextlib.suppress(asyncio.CancelledError):
                words = await utterance.speculation
        elif utterance.paused and utterance.settled_ms >= utterance.speech_end_ms:
            words = []  # its words were made final at the pause; only silence followed
        if words is None:
            words = await self._final_words(utterance, utterance.end_ms) or []
        await self._publish_final(utterance, words, utterance.settled_ms, utterance.end_ms)
        await self._emit(
            UtteranceEnded(
                utterance.item_id,
                text_of(utterance.final),
                tuple(utterance.final),
                utterance.start_ms,
                utterance.end_ms,
                forced=utterance.forced,
            )
        )

    async def _publish_final(
        self, utterance: Utterance, words: list[TimedWord], start_ms: float, end_ms: float
    ) -> None:
        if self.settings.diarization and words and words[0].speaker is None:
            words = await self._label(words, start_ms, end_ms, utterance)
        utterance.final.extend(words)
        await self._emit(WordsFinal(utterance.item_id, tuple(words), start_ms, end_ms))

    async def _label(
        self, words: list[TimedWord], start_ms: float, end_ms: float, utterance: Utterance | None = None
    ) -> list[TimedWord]:
        if not self.settings.diarization:
            return words
        if utterance is not None:
            start_ms = self._speaker_start(utterance, start_ms, end_ms)
        return await self._models.label(words, start_ms, end_ms)

    def _speaker_start(self, utterance: Utterance, start_ms: float, end_ms: float) -> float:
        """Where the audio embedded for the words between two stream times starts."""
        return max(utterance.start_ms, min(start_ms, end_ms - _MIN_SPEAKER_AUDIO_MS))

    def speakers(self) -> list[dict[str, float | int]]:
        """The speakers heard so far (``GetSpeakers``): label, windows, seconds of speech."""
        return self._labeller.summary() if self._labeller is not None else []
