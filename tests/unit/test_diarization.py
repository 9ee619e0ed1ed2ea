"""Online speaker clustering with synthetic embeddings: labels, limits, smoothing, word lookup."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.types import SpeakerEmbeddings
from serve_app.engine.diarization import (
    DEFAULT_THRESHOLD,
    OnlineSpeakers,
    SpeakerSpan,
    threshold_for_sensitivity,
)

DIM = 32


def voice(seed: int) -> np.ndarray:
    """A random unit 'voice' direction; different seeds are nearly orthogonal in 32-d."""
    v = np.random.default_rng(seed).normal(size=DIM)
    return v / np.linalg.norm(v)


def windows(
    directions: list[np.ndarray], noise: float = 0.15, seed: int = 0, hop: float = 0.4
) -> SpeakerEmbeddings:
    """One window per direction, with noise, 1.6 s long every ``hop`` seconds."""
    rng = np.random.default_rng(seed)
    vectors = []
    for d in directions:
        v = d + rng.normal(scale=noise / np.sqrt(DIM), size=DIM)
        vectors.append((v / np.linalg.norm(v)).tolist())
    starts = [i * hop for i in range(len(directions))]
    return SpeakerEmbeddings(starts_s=starts, ends_s=[s + 1.6 for s in starts], vectors=vectors)


def test_two_voices_get_two_stable_labels_across_calls() -> None:
    a, b = voice(1), voice(2)
    speakers = OnlineSpeakers()
    first = speakers.assign(windows([a] * 5, seed=1), offset_s=0.0)
    second = speakers.assign(windows([b] * 5, seed=2), offset_s=10.0)
    third = speakers.assign(windows([a] * 3 + [b] * 3, seed=3), offset_s=20.0)
    assert [s.label for s in first] == [1] * 5
    assert [s.label for s in second] == [2] * 5
    assert [s.label for s in third] == [1, 1, 1, 2, 2, 2]
    assert second[0].start_s == pytest.approx(10.0) and second[-1].end_s == pytest.approx(10.0 + 1.6 + 1.6)
    assert [s["label"] for s in speakers.speakers()] == [1, 2]
    assert [s["windows"] for s in speakers.speakers()] == [8, 8]


def test_max_speakers_is_never_exceeded_and_nearest_speaker_wins() -> None:
    a, b, c = voice(1), voice(2), voice(3)
    near_a = (0.6 * a + 0.4 * c) / np.linalg.norm(0.6 * a + 0.4 * c)  # below the threshold to a, nearest a
    speakers = OnlineSpeakers(max_speakers=2)
    speakers.assign(windows([a] * 4 + [b] * 4, seed=1))
    spans = speakers.assign(windows([near_a] * 4 + [c] * 4, seed=2), offset_s=5.0)
    assert len(speakers.speakers()) == 2
    assert [s.label for s in spans[:4]] == [1] * 4
    assert all(s.label in (1, 2) for s in spans)
    unlimited = OnlineSpeakers()
    unlimited.assign(windows([a] * 4 + [b] * 4 + [c] * 4, seed=1))
    assert len(unlimited.speakers()) == 3


def test_forced_windows_do_not_move_the_centroid() -> None:
    """At the limit, a stranger's windows are labelled but do not pull the speaker towards them."""
    a, b, c = voice(1), voice(2), voice(3)
    speakers = OnlineSpeakers(max_speakers=2)
    speakers.assign(windows([a] * 4 + [b] * 4, seed=1))
    speakers.assign(windows([c] * 40, seed=2))  # a third voice, forced onto speaker 1 or 2
    later = speakers.assign(windows([a] * 4 + [b] * 4, seed=3))
    assert [s.label for s in later] == [1] * 4 + [2] * 4
    assert min(s.similarity for s in later) > 0.9


def test_threshold_decides_between_same_and_new_speaker() -> None:
    a, b = voice(1), voice(2)
    mixed = (a + 0.8 * b) / np.linalg.norm(a + 0.8 * b)  # cosine ~0.78 to a
    similarity = float(mixed @ a)
    strict = OnlineSpeakers(threshold=similarity + 0.05)
    strict.assign(windows([a] * 3, noise=0.0))
    assert {s.label for s in strict.assign(windows([mixed] * 3, noise=0.0))} == {2}
    lenient = OnlineSpeakers(threshold=similarity - 0.05)
    lenient.assign(windows([a] * 3, noise=0.0))
    assert {s.label for s in lenient.assign(windows([mixed] * 3, noise=0.0))} == {1}


def test_a_lone_odd_window_is_smoothed_and_creates_no_speaker() -> None:
    a, b = voice(1), voice(2)
    speakers = OnlineSpeakers()
    spans = speakers.assign(windows([a, a, a, b, a, a], seed=1))
    assert [s.label for s in spans] == [1] * 6
    assert len(speakers.speakers()) == 1
    unsmoothed = OnlineSpeakers(smoothing=False)
    assert [s.label for s in unsmoothed.assign(windows([a, a, a, b, a, a], seed=1))] == [1, 1, 1, 2, 1, 1]
    # Two windows in a row are a change of speaker, not noise.
    assert [s.label for s in OnlineSpeakers().assign(windows([a, a, b, b, a, a], seed=1))] == [
        1,
        1,
        2,
        2,
        1,
        1,
    ]


def test_smoothing_uses_the_previous_calls_last_label() -> None:
    a, b = voice(1), voice(2)
    speakers = OnlineSpeakers()
    speakers.assign(windows([a, a, b, b], seed=1))
    # Speaker 2's last window was the previous call's; a lone 'a' between two 'b's is smoothed.
    spans = speakers.assign(windows([a, b, b], seed=2), offset_s=3.0)
    assert [s.label for s in spans] == [2, 2, 2]


def test_speech_seconds_count_overlapping_windows_once() -> None:
    a = voice(1)
    speakers = OnlineSpeakers()
    speakers.assign(windows([a] * 5, seed=1))  # windows 0-1.6, 0.4-2.0, ..., 1.6-3.2
    speakers.assign(windows([a] * 2, seed=2), offset_s=10.0)  # 10-11.6, 10.4-12.0
    (summary,) = speakers.speakers()
    assert summary["speech_s"] == pytest.approx(3.2 + 2.0)


def test_speaker_at_picks_the_label_overlapping_the_word_most() -> None:
    speakers = OnlineSpeakers()
    spans = [
        SpeakerSpan(1, 0.0, 1.6, 1.0),
        SpeakerSpan(1, 0.4, 2.0, 1.0),
        SpeakerSpan(2, 1.8, 3.4, 1.0),
        SpeakerSpan(2, 2.2, 3.8, 1.0),
    ]
    assert speakers.speaker_at(spans, 0.1, 0.5) == 1
    assert speakers.speaker_at(spans, 1.9, 2.3) == 2  # 1: 0.1 s, 2: 0.4 + 0.1 s
    assert speakers.speaker_at(spans, 3.0, 3.6) == 2
    assert speakers.speaker_at(spans, 1.5, 1.9) == 1  # 1: 0.1 + 0.4 s, 2: 0.1 s
    # No window overlaps: the nearest window's middle decides.
    assert speakers.speaker_at(spans, 5.0, 5.2) == 2
    assert speakers.speaker_at(spans, -1.0, -0.5) == 1
    with pytest.raises(ValueError):
        speakers.speaker_at([], 0.0, 1.0)


def test_empty_embeddings_label_nothing() -> None:
    speakers = OnlineSpeakers()
    assert speakers.assign(SpeakerEmbeddings(), offset_s=1.0) == []
    assert speakers.speakers() == []


def test_sensitivity_maps_onto_the_threshold() -> None:
    assert threshold_for_sensitivity(0.5) == pytest.approx(DEFAULT_THRESHOLD)
    assert threshold_for_sensitivity(1.0) > threshold_for_sensitivity(0.0)
    with pytest.raises(ValueError):
        threshold_for_sensitivity(1.5)
    with pytest.raises(ValueError):
        OnlineSpeakers(max_speakers=0)
