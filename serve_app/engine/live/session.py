"""The engine of a live transcription session: audio in, partial and final words out.

Streaming policy on a whole-utterance ASR model (Whisper on the CPU, Parakeet batched across
streams on GPUs — the ASR deployment batches concurrent requests with ``@serve.batch``):

- Server VAD cuts the stream into utterances (``SpeechStarted`` … ``SpeechStopped``).
- While one is open, its audio is decoded again whenever ``partial_step_ms`` of new audio
  has arrived and the previous decode is back (decodes of one session never overlap, so a
  slow model lowers the partial rate instead of queueing). The words not final yet are a
  ``TranscriptPartial``.
- Words that two decodes in a row agree on are settled early (``WordsFinal``) up to a clear
  pause or a sentence end, and once they end more than ``max_delay`` before the newest audio
  (in groups of about a second). Decodes start at the utterance's start (Whisper hears whole
  phrases) until the window passes ``max_window_ms`` or Whisper stops early on a window with
  two voices; then at a settled point (``window.py``), so a decode's cost stays flat.
- The VAD's early pause hint starts the final decode of the words so far, or takes a draft
  that already heard them all; if speech stays paused they are final as soon as it is back,
  without waiting for the VAD to confirm the end (``pauses.py``).
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
from serve_app.engine.live.pauses import TAIL_PAD_MS, PauseFinals
from serve_app.engine.live.settings import LivePolicy, LiveSettings, Utterance
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.live.window import GROUP_MS, slide_window, speaker_start, stopped_early
from serve_app.engine.live.words import agreed_prefix, settled_count, text_of, timed_words, unsettled_words

logger = logging.getLogger("voxray")


class LiveTranscription(PauseFinals):
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
                    self._speculate(self._open, event.speech_end_ms + TAIL_PAD_MS)
            elif isinstance(event, SpeechResumed) and self._open is not None:
                self._open.paused = False
                self._resumed(self._open, event.audio_ms)
            elif isinstance(event, SpeechStopped) and self._open is not None:
                await self._close_open(event.speech_end_ms + TAIL_PAD_MS, forced=False)
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
        slide_window(utterance, self._audio.end_ms - self._policy.max_window_ms)
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
        if stopped_early(utterance, placed, head):
            return  # decoded again from the last settled point, at once
        words = unsettled_words(placed, utterance)
        agreed = agreed_prefix(utterance.draft, words)
        utterance.draft, utterance.draft_head_ms = words, head
        settle, cut_ms = settled_count(
            words, agreed, head - self.settings.max_delay_ms, self._policy.settle_pause_ms, GROUP_MS
        )
        if settle and self._policy.early_finals:
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

    async def _final_words(self, utterance: Utterance, end_ms: float) -> list[TimedWord] | None:
        slide_window(utterance, self._audio.end_ms - self._policy.max_window_ms)
        start, settled = utterance.window_ms, utterance.settled_ms
        # Who spoke is worked out beside what was said: the Speaker deployment embeds while ASR decodes.
        embedding = (
            asyncio.create_task(self._models.embed(speaker_start(utterance, settled, end_ms), end_ms))
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
        if stopped_early(utterance, placed, end_ms - TAIL_PAD_MS):
            return await self._final_words(utterance, end_ms)
        words = unsettled_words(placed, utterance)
        if not self.settings.diarization:
            return words
        return self._models.apply(words, embeddings, speaker_start(utterance, settled, end_ms))

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
            start_ms = speaker_start(utterance, start_ms, end_ms)
        return await self._models.label(words, start_ms, end_ms)

    def speakers(self) -> list[dict[str, float | int]]:
        """The speakers heard so far (``GetSpeakers``): label, windows, seconds of speech."""
        return self._labeller.summary() if self._labeller is not None else []
