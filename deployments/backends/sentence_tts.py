"""What the sentence-at-a-time TTS backends (Piper, NeMo) share: streaming and stopping.

A subclass turns text into one PCM16 buffer per sentence, lazily (:meth:`_sentence_audio`);
this base runs that on a one-worker thread, cuts each sentence into ``chunk_ms`` pieces as
soon as it is done, and stops before the next sentence or chunk once the consumer closes the
stream (barge-in).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployments.backends.base import Backend, stream_from_worker
from deployments.types import AudioChunk


class SentenceTTS(Backend):
    """Base of TTS backends that synthesise one sentence at a time.

    Subclasses set :attr:`sample_rate`, call :meth:`_init_streaming` in their constructor
    and implement :meth:`_sentence_audio`.
    """

    sample_rate: int

    def _init_streaming(self, chunk_ms: int, thread_name: str) -> None:
        """Chunk size, the worker thread and the counters; call once :attr:`sample_rate` is known."""
        self._chunk_bytes = max(2, int(self.sample_rate * chunk_ms / 1000) * 2)
        # One worker: one synthesis at a time keeps the engine's work in order (espeak-ng's
        # phonemiser is not thread-safe) and the replica within its CPU or GPU budget.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        # Counters are only written by the single worker thread.
        self._active = 0
        self._sentences = 0
        self._chunks = 0
        self._aborted = 0

    def _sentence_audio(self, text: str) -> Generator[bytes, None, None]:
        """Mono PCM16 at :attr:`sample_rate`, one buffer per sentence, each made when asked for."""
        raise NotImplementedError

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream ``text`` as PCM16 chunks at :attr:`sample_rate`.

        Closing the iterator stops synthesis before the next sentence.
        """

        def produce(emit: Callable[[AudioChunk], None], stop: threading.Event) -> None:
            self._synthesize(text, emit, stop)

        return stream_from_worker(self._executor, produce)

    def _synthesize(self, text: str, emit: Callable[[AudioChunk], None], stop: threading.Event) -> None:
        if stop.is_set():
            self._aborted += 1
            return
        if not text.strip():
            return
        self._active += 1
        aborted = False
        sentences = self._sentence_audio(text)
        try:
            for pcm in sentences:
                self._sentences += 1
                step = self._chunk_bytes
                for start in range(0, len(pcm), step):
                    if stop.is_set():
                        aborted = True
                        return
                    self._chunks += 1
                    emit(AudioChunk(pcm16=pcm[start : start + step], sample_rate=self.sample_rate))
                # The next iteration synthesises the next sentence: check before paying for it.
                if stop.is_set():
                    aborted = True
                    return
        finally:
            sentences.close()
            self._active -= 1
            self._aborted += aborted

    async def warmup(self) -> None:
        """Synthesise one short word."""
        async for _ in self.synthesize("Hello.", None):
            pass

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_syntheses``, ``sentences_synthesized``, ``chunks_sent`` and
        ``aborted_syntheses`` (stopped by the consumer before the end)."""
        return {
            "active_syntheses": self._active,
            "sentences_synthesized": self._sentences,
            "chunks_sent": self._chunks,
            "aborted_syntheses": self._aborted,
        }
