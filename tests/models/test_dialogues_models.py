"""The live-transcription test set built with the real voices and the real aligner.

Bounds, not exact words: int8 Whisper differs between CPUs, and synthetic voices are not
always heard right.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench.dialogues import RATE, VOICES, Synthesizer, WordAligner, build_dialogue, plan_dialogue
from bench.wer import normalize_words, word_error_rate
from serve_app.engine.audio.pcm import read_wav

pytestmark = pytest.mark.models

SENTENCES = [
    "Could you send me the notes from the meeting?",
    "We watched the sunset from the top of the hill.",
]


@pytest.fixture(scope="module")
def aligner() -> WordAligner:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (extra [cpu])")
    return WordAligner()


@pytest.fixture(scope="module")
def whisper() -> object:
    from faster_whisper import WhisperModel

    from deployments.models import resolve_model

    return WhisperModel(str(resolve_model("bundled:whisper-base")), compute_type="int8", cpu_threads=2)


def test_every_voice_is_intelligible(whisper: object) -> None:
    """Whisper hears every voice of the pool well: WER over all voices and sentences ≤ 15 %."""
    synthesizer = Synthesizer()
    references, heard = [], []
    for voice in VOICES:
        for sentence in SENTENCES:
            pcm = synthesizer.speak(voice, sentence)
            assert len(pcm) / 2 / RATE > 1.0, f"{voice.name} said almost nothing"
            audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
            segments, _ = whisper.transcribe(audio, language="en", beam_size=1)  # type: ignore[attr-defined]
            references.append(sentence)
            heard.append(" ".join(s.text for s in segments))
    assert word_error_rate(references, heard) <= 0.15, list(zip(references, heard, strict=True))


def test_forced_alignment_agrees_with_whisper_word_times(aligner: WordAligner, whisper: object) -> None:
    """Aligned word times sit where Whisper's own word timestamps put the same words."""
    synthesizer = Synthesizer()
    differences = []
    for voice in VOICES[::2]:
        pcm = synthesizer.speak(voice, SENTENCES[0])
        aligned = aligner.align(pcm, SENTENCES[0])
        assert [w.text for w in aligned] == normalize_words(SENTENCES[0])
        duration = len(pcm) / 2 / RATE
        assert all(0 <= w.start_s <= w.end_s <= duration + 0.05 for w in aligned)
        assert all(a.start_s <= b.start_s for a, b in itertools.pairwise(aligned))
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        segments, _ = whisper.transcribe(audio, language="en", word_timestamps=True)  # type: ignore[attr-defined]
        theirs = [(normalize_words(w.word), w.start) for s in segments for w in s.words]
        for word in aligned:
            same = [start for text, start in theirs if text == [word.text]]
            if same:
                differences.append(min(abs(start - word.start_s) for start in same))
    assert len(differences) > 10
    assert statistics.median(differences) <= 0.15


@pytest.mark.parametrize("speakers", [2, 3])
def test_built_dialogue_matches_its_plan(tmp_path: Path, aligner: WordAligner, speakers: int) -> None:
    dialogue = build_dialogue(0, speakers, tmp_path, aligner=aligner)
    plan = plan_dialogue(0, speakers)
    pcm, rate = read_wav(dialogue.wav_path)
    assert rate == RATE and dialogue.duration_s == pytest.approx(len(pcm) / 2 / RATE, abs=1e-3)
    by_turn = sorted(dialogue.words, key=lambda w: (w.turn, w.start_s))
    assert [w.text for w in by_turn] == [w for t in plan.turns for w in normalize_words(t.text)]
    assert {w.speaker for w in dialogue.words} == set(range(speakers))
    assert all(0 <= w.start_s <= w.end_s <= dialogue.duration_s for w in dialogue.words)
    assert dialogue.words == sorted(dialogue.words, key=lambda w: (w.start_s, w.end_s))
    # Speech where the words are, near-silence in the lead-in before the first one.
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    lead = samples[: int(dialogue.words[0].start_s * RATE) - 800]
    assert np.sqrt((lead**2).mean()) < 50
    # A second call reuses the files.
    mtime = dialogue.wav_path.stat().st_mtime_ns
    assert build_dialogue(0, speakers, tmp_path) == dialogue
    assert dialogue.wav_path.stat().st_mtime_ns == mtime
