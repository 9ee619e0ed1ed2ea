"""Placing ASR words on the stream's timeline, and the agreement that settles them early."""

from __future__ import annotations

from deployments.types import Transcript, Word
from serve_app.engine.events import TimedWord
from serve_app.engine.live.words import agreed_prefix, normalize, settled_count, text_of, timed_words


def words(*texts: str, step: float = 100.0) -> list[TimedWord]:
    return [TimedWord(t, i * step, (i + 1) * step) for i, t in enumerate(texts)]


def test_word_times_are_offset_into_the_stream_and_punctuation_split_off() -> None:
    transcript = Transcript(
        text="Hello, Paris.",
        words=[Word(text="Hello,", start_s=0.1, end_s=0.4), Word(text="Paris.", start_s=0.5, end_s=0.9)],
    )
    placed = timed_words(transcript, offset_ms=1000.0, audio_ms=1000.0)
    assert [w.text for w in placed] == ["Hello", ",", "Paris", "."]
    assert placed[0].start_ms == 1100.0 and placed[0].end_ms == 1400.0
    assert placed[1].is_punctuation and placed[1].start_ms == 1400.0
    assert placed[2].start_ms == 1500.0 and placed[3].end_ms == 1900.0


def test_words_without_times_are_spread_over_the_audio_and_clamped() -> None:
    placed = timed_words(Transcript(text="one two three four"), offset_ms=500.0, audio_ms=2000.0)
    assert [w.start_ms for w in placed] == [500.0, 1000.0, 1500.0, 2000.0]
    assert placed[-1].end_ms == 2500.0
    late = Transcript(text="x", words=[Word(text="x", start_s=3.0, end_s=4.0)])
    [word] = timed_words(late, offset_ms=0.0, audio_ms=1000.0)
    assert word.start_ms == word.end_ms == 1000.0


def test_agreement_is_the_common_prefix_ignoring_case_and_marks() -> None:
    before = words("The", "quick", "brown", "file")
    now = words("the", "Quick", "brown", "fox", "jumps")
    assert agreed_prefix(before, now) == 3
    assert agreed_prefix([], now) == 0
    assert agreed_prefix(words("Hi", ","), words("hi", ".")) == 2
    assert agreed_prefix(words("a", "b"), words("x", "b")) == 0


def test_agreed_words_are_settled_at_a_pause_or_when_old_enough() -> None:
    def at(text: str, start: float, end: float) -> TimedWord:
        return TimedWord(text, start, end)

    now = [
        at("one", 0, 100),
        at("two", 100, 200),
        at(".", 200, 600),
        at("three", 600, 700),
        at("four", 700, 800),
    ]
    # A 400 ms pause (the full stop's span counts as silence) after "two": final at once.
    assert settled_count(now, agreed=5, before_ms=0.0, pause_ms=250.0) == (3, 400.0)
    # Not agreed past the pause: nothing is final yet.
    assert settled_count(now, agreed=2, before_ms=0.0, pause_ms=250.0) == (0, 0.0)
    # No clear pause: agreed words older than max_delay are final, their mark with them.
    tight = [at("a", 0, 100), at("b", 110, 200), at(",", 200, 200), at("c", 230, 300), at("d", 300, 400)]
    assert settled_count(tight, agreed=5, before_ms=250.0, pause_ms=250.0) == (3, 200.0)
    assert settled_count(tight, agreed=1, before_ms=250.0, pause_ms=250.0) == (1, 100.0)


def test_an_agreed_sentence_end_settles_its_sentence_at_once() -> None:
    words = [TimedWord("yes", 0, 300), TimedWord(".", 300, 400), TimedWord("and", 400, 600)]
    assert settled_count(words, agreed=2, before_ms=0.0, pause_ms=250.0) == (2, 350.0)
    assert settled_count(words, agreed=1, before_ms=0.0, pause_ms=250.0) == (0, 0.0)
    comma = [TimedWord("yes", 0, 300), TimedWord(",", 300, 300), TimedWord("and", 300, 600)]
    assert settled_count(comma, agreed=3, before_ms=0.0, pause_ms=250.0) == (0, 0.0)


def test_words_settled_by_age_go_out_in_groups() -> None:
    words = [TimedWord(t, i * 300.0, (i + 1) * 300.0) for i, t in enumerate(["a", "b", "c", "d", "e", "f"])]
    # Only "a" (ends at 300) is older than max_delay; the group takes words ending by 300 + 1000.
    assert settled_count(words, agreed=6, before_ms=300.0, pause_ms=250.0, group_ms=1000.0) == (4, 1200.0)
    # Nothing old enough yet: nothing goes, however young words group.
    assert settled_count(words, agreed=6, before_ms=200.0, pause_ms=250.0, group_ms=1000.0) == (0, 0.0)


def test_text_puts_marks_against_their_word() -> None:
    assert text_of(words("Hello", ",", "world", "!")) == "Hello, world!"
    assert normalize("Don't!") == "dont"
