"""Speaker labels for live words: embeddings from the Speaker deployment, online clustering.

The Speaker deployment embeds overlapping windows of a settled stretch of audio; the
session's :class:`~serve_app.engine.diarization.OnlineSpeakers` gives each window a label; each
word takes the label of the windows it overlaps most. Partials have no audio of their own
settled yet, so their words take the label of the last word labelled (Speechmatics' own
partials are provisional too).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from deployments.types import SpeakerEmbeddings
from serve_app.engine.diarization import DEFAULT_THRESHOLD, OnlineSpeakers
from serve_app.engine.events import TimedWord

logger = logging.getLogger("voxray")


class SpeakerLabeller:
    """Labels one session's words with speakers.

    Args:
        speaker: The speaker embedding endpoint (``embed(pcm16, sample_rate)``).
        max_speakers: At most this many labels (``None``: no limit).
        threshold: Cosine similarity below which a window is a new speaker; higher finds more.
    """

    whole_max_s = 4.0

    def __init__(self, speaker: Any, max_speakers: int | None, threshold: float = DEFAULT_THRESHOLD) -> None:
        self._speaker = speaker
        self._clusters = OnlineSpeakers(max_speakers=max_speakers, threshold=threshold)
        self._last: int | None = None

    @property
    def max_speakers(self) -> int | None:
        """The limit on distinct labels."""
        return self._clusters.max_speakers

    @max_speakers.setter
    def max_speakers(self, value: int | None) -> None:
        self._clusters.max_speakers = value

    async def embed(self, pcm16: bytes, rate: int) -> SpeakerEmbeddings | None:
        """Embeddings of a stretch of audio; ``None`` when the call failed (logged).

        A failure leaves that stretch's words with the last label seen: the transcript matters
        more than who said it.
        """
        try:
            return await self._speaker.embed(pcm16, rate)
        except Exception:
            logger.exception("live transcription: speaker embedding failed")
            return None

    def apply(
        self, words: list[TimedWord], embeddings: SpeakerEmbeddings | None, offset_ms: float
    ) -> list[TimedWord]:
        """``words`` with speaker labels from the embeddings of their audio.

        Calls must come in stream order (the clustering learns from each). A stretch of at
        most ``whole_max_s`` is one phrase, between pauses: it is labelled as a whole, from the
        mean of its windows, which is steadier than window by window; a longer one is
        labelled window by window, as it may hold a change of speaker.

        Args:
            words: The words of the stretch, in stream time.
            embeddings: Its windows (times relative to the stretch), or ``None``.
            offset_ms: Where the stretch starts in the stream.
        """
        if embeddings is not None and embeddings.vectors and embeddings.ends_s[-1] <= self.whole_max_s:
            mean = np.mean(np.asarray(embeddings.vectors), axis=0)
            mean /= np.linalg.norm(mean) or 1.0
            embeddings = SpeakerEmbeddings(
                starts_s=[embeddings.starts_s[0]], ends_s=[embeddings.ends_s[-1]], vectors=[mean.tolist()]
            )
        spans = self._clusters.assign(embeddings, offset_ms / 1000) if embeddings is not None else []
        labelled: list[TimedWord] = []
        for word in words:
            if spans:
                speaker = self._clusters.speaker_at(spans, word.start_ms / 1000, word.end_ms / 1000)
            else:
                speaker = self._last or 1
            if word.is_punctuation and labelled:
                speaker = labelled[-1].speaker or speaker  # a mark belongs to the word before it
            labelled.append(dataclasses.replace(word, speaker=speaker))
        if labelled:
            self._last = labelled[-1].speaker
        return labelled

    def guess(self, words: list[TimedWord]) -> list[TimedWord]:
        """Provisional labels for partial words: the last label seen."""
        speaker = self._last or 1
        return [dataclasses.replace(word, speaker=speaker) for word in words]

    def summary(self) -> list[dict[str, Any]]:
        """Each speaker so far (``GetSpeakers``)."""
        return self._clusters.speakers()
