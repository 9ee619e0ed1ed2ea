"""The live-transcription test set's plan and mixing (bench.dialogues), without any model."""

from __future__ import annotations

import numpy as np
import pytest

from bench.dialogues import (
    LEAD_S,
    OVERLAP_S,
    PAUSE_S,
    RATE,
    TAIL_S,
    TARGET_RMS_DBFS,
    TURNS,
    AlignedWord,
    Clip,
    equalise_loudness,
    mix_dialogue,
    plan_dialogue,
)
from bench.wer import normalize_words


def test_plan_is_deterministic_and_differs_between_indices() -> None:
    assert plan_dialogue(3, 2) == plan_dialogue(3, 2)
    assert plan_dialogue(3, 2).digest() == plan_dialogue(3, 2).digest()
    assert plan_dialogue(3, 2).turns != plan_dialogue(4, 2).turns
    assert plan_dialogue(3, 2).name != plan_dialogue(3, 3).name


@pytest.mark.parametrize("speakers", [2, 3])
def test_plan_bounds(speakers: int) -> None:
    overlaps = 0
    for index in range(30):
        plan = plan_dialogue(index, speakers)
        assert TURNS[0] <= len(plan.turns) <= TURNS[1]
        assert {t.speaker for t in plan.turns} == set(range(speakers))
        voices = {t.speaker: t.voice for t in plan.turns}
        assert len({v.name for v in voices.values()}) == speakers
        assert len({v.family for v in voices.values()}) == speakers, "two voices of one family"
        for turn in plan.turns:
            assert all(t.voice == voices[t.speaker] for t in plan.turns)
            assert 1 <= turn.text.count(".") + turn.text.count("?") <= 2
        assert plan.turns[0].gap_s == 0.0
        for prev, turn in zip(plan.turns, plan.turns[1:], strict=False):
            assert turn.speaker != prev.speaker
            if turn.gap_s < 0:
                overlaps += 1
                assert OVERLAP_S[0] <= -turn.gap_s <= OVERLAP_S[1]
            else:
                assert PAUSE_S[0] <= turn.gap_s <= PAUSE_S[1]
    assert overlaps > 0


def test_plan_rejects_other_speaker_counts() -> None:
    with pytest.raises(ValueError):
        plan_dialogue(0, 4)


def _tone_clip(text: str, seconds_per_word: float = 0.3) -> Clip:
    """A synthetic clip: one tone burst per word, the words' spans exactly the bursts."""
    words = normalize_words(text)
    n = round(len(words) * seconds_per_word * RATE)
    t = np.arange(n) / RATE
    pcm = (0.2 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
    aligned = [
        AlignedWord(text=w, start_s=i * seconds_per_word, end_s=(i + 1) * seconds_per_word)
        for i, w in enumerate(words)
    ]
    return Clip(pcm16=pcm, words=aligned)


def test_mix_places_words_inside_the_audio_in_order() -> None:
    plan = plan_dialogue(1, 3)
    clips = [_tone_clip(t.text) for t in plan.turns]
    pcm, words = mix_dialogue(plan, clips)
    duration = len(pcm) / 2 / RATE
    assert [w.text for w in sorted(words, key=lambda w: (w.turn, w.start_s))] == [
        word for t in plan.turns for word in normalize_words(t.text)
    ]
    assert words == sorted(words, key=lambda w: (w.start_s, w.end_s))
    assert words[0].start_s == pytest.approx(LEAD_S)
    assert max(w.end_s for w in words) == pytest.approx(duration - TAIL_S, abs=1e-3)
    for w in words:
        assert 0 <= w.start_s < w.end_s <= duration
        assert w.speaker == plan.turns[w.turn].speaker
    # Each turn starts its planned gap after the previous one ends (overlaps negative).
    for i in range(1, len(plan.turns)):
        prev_end = max(w.end_s for w in words if w.turn == i - 1)
        start = min(w.start_s for w in words if w.turn == i)
        assert start - prev_end == pytest.approx(plan.turns[i].gap_s, abs=2e-3)


def test_mix_rejects_a_missing_clip() -> None:
    plan = plan_dialogue(0, 2)
    with pytest.raises(ValueError):
        mix_dialogue(plan, [_tone_clip(t.text) for t in plan.turns[:-1]])


def test_loudness_is_equalised() -> None:
    quiet = _tone_clip("one two three").pcm16
    quiet = (np.frombuffer(quiet, dtype="<i2") // 20).astype("<i2").tobytes()
    out = np.frombuffer(equalise_loudness(quiet), dtype="<i2").astype(np.float64) / 32768
    assert 20 * np.log10(np.sqrt((out**2).mean())) == pytest.approx(TARGET_RMS_DBFS, abs=0.5)
    assert equalise_loudness(bytes(640)) == bytes(640)
