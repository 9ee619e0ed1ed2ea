"""Who spoke: online speaker clustering of embedding windows for one live session.

The Speaker deployment turns a stretch of audio into unit-length embeddings of overlapping
windows (:class:`~deployments.types.SpeakerEmbeddings`); :class:`OnlineSpeakers` gives each
window a speaker label 1, 2, ... as the session goes, and :meth:`OnlineSpeakers.speaker_at`
picks a word's label from the windows it overlaps. Protocol-neutral (the Speechmatics adapter
renders label 1 as ``"S1"``), no Ray, numpy only.

How a window is labelled: each speaker has a centroid, the normalised mean of every window
given to it so far. A window goes to the speaker whose centroid is most similar (cosine),
unless even that similarity is below ``threshold`` and fewer than ``max_speakers`` exist:
then it starts a new speaker. Labels, once handed out, never change; a new speaker gets the
next number.

Why the defaults (measured with Resemblyzer's GE2E encoder, 1.6 s windows every 0.4 s, on
8 sentences each from 8 synthetic voices: espeak-ng en-us+m3, en-us+m7, en+f3; flite slt,
awb, rms, kal16; Piper joe; one ``assign`` call per sentence, sentences shuffled):

* ``threshold`` 0.72: against a centroid of *one* sentence of the same voice, 99 % of windows
  scored at least 0.75; against one sentence of another voice, 99 % scored under 0.73. A
  young speaker's centroid is such a one-sentence centroid, and that is where errors start,
  so the threshold sits between the two (settled centroids separate better: own voice at
  least 0.84, others mostly under 0.75). With 3 voices drawn from the 8, 0.72 labelled
  99.4 % of windows right on average (0.70: 97.9 %, 0.76: 98.4 %, 0.78: 96.9 % with
  more false speakers). Voices closer than that are merged: espeak-ng's m3 and m7
  variants (centroids 0.81 apart) become one speaker. :func:`threshold_for_sensitivity`
  maps a client's 0-1 sensitivity onto it.
* Windows matched below the threshold (only when ``max_speakers`` forces them onto the
  nearest speaker) are labelled but do not move that speaker's centroid: otherwise a forced
  speaker drifts towards the average voice and then attracts everyone.
* ``smoothing``: a run of windows of one speaker interrupted by a single window of another
  (a cough, a laugh, a window straddling a pause) is almost always one speaker; one window
  is 0.4 s of new audio. Such a lone window takes its neighbours' label, and a speaker
  that only that window had started is not created.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from deployments.types import SpeakerEmbeddings

DEFAULT_THRESHOLD = 0.72
_SENSITIVITY_SPAN = 0.2  # sensitivity 0..1 maps to threshold 0.62..0.82


def threshold_for_sensitivity(sensitivity: float) -> float:
    """The clustering threshold for a 0-1 speaker sensitivity (higher finds more speakers).

    0.5 gives :data:`DEFAULT_THRESHOLD`; 0 and 1 move it by 0.1 either way, about the
    width of the band between same-voice and other-voice similarities.
    """
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be within 0 and 1, got {sensitivity}")
    return DEFAULT_THRESHOLD + (sensitivity - 0.5) * _SENSITIVITY_SPAN


@dataclasses.dataclass(frozen=True)
class SpeakerSpan:
    """One embedding window with its speaker, in stream time.

    Attributes:
        label: The speaker, 1-based.
        start_s: Where the window starts, seconds from the start of the stream.
        end_s: Where it ends.
        similarity: Cosine similarity of the window to the nearest speaker's centroid when
            it was labelled (1.0 for a window that started a speaker).
    """

    label: int
    start_s: float
    end_s: float
    similarity: float


@dataclasses.dataclass
class _Speaker:
    total: np.ndarray  # sum of the speaker's window vectors; its direction is the centroid
    windows: int = 0
    speech_s: float = 0.0
    covered_until_s: float = 0.0  # end of the latest window counted in speech_s

    def centroid(self) -> np.ndarray:
        return self.total / max(float(np.linalg.norm(self.total)), 1e-12)


class OnlineSpeakers:
    """Online speaker clustering for one live session (not thread-safe; one per session).

    Args:
        max_speakers: At most this many labels (``None``: no limit). When reached, every
            window goes to the nearest existing speaker. May be changed between calls.
        threshold: Below this cosine similarity to every speaker's centroid, a window starts
            a new speaker (while ``max_speakers`` allows). Higher finds more speakers.
        smoothing: Give a lone window between two windows of one other speaker their label.
    """

    def __init__(
        self, max_speakers: int | None = None, threshold: float = DEFAULT_THRESHOLD, smoothing: bool = True
    ) -> None:
        if max_speakers is not None and max_speakers < 1:
            raise ValueError(f"max_speakers must be at least 1, got {max_speakers}")
        self.max_speakers = max_speakers
        self.threshold = threshold
        self.smoothing = smoothing
        self._speakers: list[_Speaker] = []  # label i + 1
        self._last_label: int | None = None

    def assign(self, embeddings: SpeakerEmbeddings, offset_s: float = 0.0) -> list[SpeakerSpan]:
        """Label each window of ``embeddings`` and learn from them.

        Calls must come in stream order (each call's audio after the previous call's).

        Args:
            embeddings: Windows of one stretch of audio, times relative to its start.
            offset_s: Where that audio starts in the stream.

        Returns:
            One span per window, in order, with stream times.
        """
        if not embeddings.vectors:
            return []
        vectors = np.asarray(embeddings.vectors, dtype=np.float64)
        labels, similarities = self._label_windows(vectors)
        if self.smoothing:
            labels = self._smooth(labels)
        labels = self._commit(vectors, labels, similarities, embeddings, offset_s)
        self._last_label = labels[-1]
        return [
            SpeakerSpan(label, offset_s + start, offset_s + end, sim)
            for label, start, end, sim in zip(
                labels, embeddings.starts_s, embeddings.ends_s, similarities, strict=True
            )
        ]

    def _label_windows(self, vectors: np.ndarray) -> tuple[list[int], list[float]]:
        """First pass, in order, on a working copy: nearest centroid or a new speaker."""
        totals = [s.total.copy() for s in self._speakers]
        labels: list[int] = []
        similarities: list[float] = []
        for vector in vectors:
            best, best_sim = -1, -1.0
            if totals:
                centroids = np.stack(totals) / np.linalg.norm(np.stack(totals), axis=1, keepdims=True)
                sims = centroids @ vector
                best, best_sim = int(np.argmax(sims)), float(np.max(sims))
            room = self.max_speakers is None or len(totals) < self.max_speakers
            if best < 0 or (best_sim < self.threshold and room):
                totals.append(vector.copy())
                labels.append(len(totals))
                similarities.append(1.0)
            else:
                if best_sim >= self.threshold:
                    totals[best] += vector
                labels.append(best + 1)
                similarities.append(best_sim)
        return labels, similarities

    def _smooth(self, labels: list[int]) -> list[int]:
        """A lone window between two windows of one other speaker takes their label.

        The window before the first one is the previous call's last, so a lone window at
        the start of a call is smoothed too; the last window of a call has no right
        neighbour yet and keeps its label.
        """
        context = [self._last_label, *labels]
        smoothed = list(labels)
        for i in range(1, len(context) - 1):
            before, here, after = context[i - 1], context[i], context[i + 1]
            if before is not None and before == after != here:
                smoothed[i - 1] = before
        return smoothed

    def _commit(
        self,
        vectors: np.ndarray,
        labels: list[int],
        similarities: list[float],
        embeddings: SpeakerEmbeddings,
        offset_s: float,
    ) -> list[int]:
        """Add the windows to their speakers; speakers the smoothing emptied are not created.

        New labels are numbered in order of first appearance after the existing ones.
        """
        known = len(self._speakers)
        renumber: dict[int, int] = {}
        final: list[int] = []
        for label in labels:
            if label > known and label not in renumber:
                renumber[label] = known + len(renumber) + 1
                self._speakers.append(_Speaker(total=np.zeros(vectors.shape[1])))
            final.append(renumber.get(label, label))
        rows = zip(vectors, final, similarities, embeddings.starts_s, embeddings.ends_s, strict=True)
        for vector, label, similarity, start, end in rows:
            speaker = self._speakers[label - 1]
            if similarity >= self.threshold:
                speaker.total = speaker.total + vector
            speaker.windows += 1
            start, end = offset_s + start, offset_s + end
            # Windows overlap: count each second of a speaker's audio once.
            speaker.speech_s += max(0.0, end - max(start, speaker.covered_until_s))
            speaker.covered_until_s = max(speaker.covered_until_s, end)
        return final

    def speaker_at(self, spans: Sequence[SpeakerSpan], start_s: float, end_s: float) -> int:
        """The speaker of a word from ``start_s`` to ``end_s`` (stream time).

        The label whose windows overlap the word most (summed over windows); when no window
        overlaps it, the label of the window whose middle is nearest the word's.

        Raises:
            ValueError: ``spans`` is empty.
        """
        if not spans:
            raise ValueError("no speaker spans to choose from")
        overlap: dict[int, float] = {}
        for span in spans:
            shared = min(end_s, span.end_s) - max(start_s, span.start_s)
            if shared > 0:
                overlap[span.label] = overlap.get(span.label, 0.0) + shared
        if overlap:
            return max(overlap, key=lambda label: overlap[label])
        middle = (start_s + end_s) / 2
        return min(spans, key=lambda span: abs((span.start_s + span.end_s) / 2 - middle)).label

    def speakers(self) -> list[dict[str, float | int]]:
        """Each speaker so far, for ``GetSpeakers``.

        Returns:
            ``{"label": int, "windows": int, "speech_s": float}`` per speaker in label
            order; ``speech_s`` counts the audio under the speaker's windows once.
        """
        return [
            {"label": i + 1, "windows": s.windows, "speech_s": round(s.speech_s, 3)}
            for i, s in enumerate(self._speakers)
        ]
