"""Tests for serve_app.engine.text: phrase splitting of streamed LLM text, speech cleaning."""

from __future__ import annotations

import random

import pytest

from serve_app.engine.text import PhraseSplitter, clean_for_speech


def split(text: str, step: int = 1, **kwargs: int) -> list[str]:
    """Push ``text`` in deltas of ``step`` characters; return every phrase including the flush."""
    splitter = PhraseSplitter(**kwargs)
    phrases: list[str] = []
    for i in range(0, len(text), step):
        phrases += splitter.push(text[i : i + step])
    rest = splitter.flush()
    return [*phrases, rest] if rest else phrases


# Large min_first_words: these cases test sentence ends only, not the early first cut.
SENTENCES = {"min_first_words": 100}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Hi there. How are you? Great!", ["Hi there.", "How are you?", "Great!"]),
        ("First; second: third.", ["First;", "second:", "third."]),
        ("Dr. Smith met Mr. Jones.", ["Dr. Smith met Mr. Jones."]),
        ("Take fruit, e.g. apples, i.e. food. Done.", ["Take fruit, e.g. apples, i.e. food.", "Done."]),
        ("Pi is 3.14 roughly. Yes.", ["Pi is 3.14 roughly.", "Yes."]),
        ("The U.S. Army is big. It is.", ["The U.S. Army is big.", "It is."]),
        ("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it.", "Yes."]),
        ("So am I. Then we go.", ["So am I.", "Then we go."]),
        ("Well... I think so. Ok.", ["Well... I think so.", "Ok."]),
        ("Well… maybe not. Ok.", ["Well… maybe not.", "Ok."]),
        ("I see... Paris is big.", ["I see...", "Paris is big."]),
        ("Wait?! Really.", ["Wait?!", "Really."]),
        ('He said "hi." Then left.', ['He said "hi."', "Then left."]),
        ("**Paris.** It is lovely.", ["**Paris.**", "It is lovely."]),
        ("Meet at 3:30 today. Ok.", ["Meet at 3:30 today.", "Ok."]),
        ("It costs 1,000 dollars. Ok.", ["It costs 1,000 dollars.", "Ok."]),
        ("Visit example.com today. Ok.", ["Visit example.com today.", "Ok."]),
        ("Apples, pears, etc. Then more.", ["Apples, pears, etc.", "Then more."]),
        ("Apples, pears, etc. and more.", ["Apples, pears, etc. and more."]),
        ("Line one\nLine two\n\n\nLine three", ["Line one", "Line two", "Line three"]),
        ("Steps:\n1. Open it.\n2. Close it.", ["Steps:", "1. Open it.", "2. Close it."]),
        ("It was 2024. Then came more.", ["It was 2024.", "Then came more."]),
        ("No trailing punctuation", ["No trailing punctuation"]),
    ],
)
def test_sentence_ends(text: str, want: list[str]) -> None:
    assert split(text, **SENTENCES) == want
    assert split(text, step=len(text), **SENTENCES) == want


def test_end_punctuation_waits_for_the_next_delta() -> None:
    splitter = PhraseSplitter(min_first_words=100)
    assert splitter.push("It costs 3.") == []  # "3." may become "3.14"
    assert splitter.push("14 dollars.") == []
    assert splitter.push(" Then") == ["It costs 3.14 dollars."]
    assert splitter.flush() == "Then"


def test_first_phrase_cuts_early_at_a_clause_once_long_enough() -> None:
    text = "Yes, Paris is the capital of France, and it is lovely, with many museums, too."
    assert split(text) == [
        "Yes, Paris is the capital of France,",  # "Yes," alone is too short
        "and it is lovely, with many museums, too.",  # later phrases keep their commas
    ]
    assert split(text, min_first_words=2) == [
        "Yes, Paris is the capital of France,",
        "and it is lovely, with many museums, too.",
    ]
    assert split(text, min_first_words=1)[0] == "Yes,"


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Well, I really do think — it is Paris. Yes.", "Well, I really do think —"),
        ("The answer I believe - is Paris. Yes.", "The answer I believe -"),
        ("Hmm, let me think about it... it is Paris. Yes.", "Hmm, let me think about it..."),
    ],
)
def test_first_phrase_clause_boundaries(text: str, first: str) -> None:
    assert split(text)[0] == first


def test_first_phrase_rule_starts_again_after_flush_and_reset() -> None:
    splitter = PhraseSplitter()
    assert splitter.push("One two three four, five. ") == ["One two three four,", "five."]
    assert splitter.push("Six seven eight nine, ten. ") == ["Six seven eight nine, ten."]
    assert splitter.flush() is None
    assert splitter.push("One two three four, five. ") == ["One two three four,", "five."]
    splitter.push("Dropped on barge-in")
    splitter.reset()
    assert splitter.push("One two three four, five") == ["One two three four,"]
    assert splitter.flush() == "five"


def test_long_phrases_are_cut_at_max_words() -> None:
    words = [f"w{i}" for i in range(25)]
    phrases = split(" ".join(words) + ".", max_words=10, min_first_words=100)
    assert phrases == [" ".join(words[:10]), " ".join(words[10:20]), " ".join(words[20:]) + "."]


def test_max_words_cut_prefers_a_late_clause_boundary() -> None:
    text = "a b c d e f g, h i j k l m n o p q r s t"
    phrases = split(text, max_words=10, min_first_words=100)
    assert phrases == ["a b c d e f g,", "h i j k l m n o p q", "r s t"]
    # A clause boundary in the first half would make a stub phrase: cut at the word instead.
    assert split("a b, c d e f g h i j k l", max_words=10, min_first_words=100)[0] == "a b, c d e f g h i j"


def test_symbols_do_not_count_as_words() -> None:
    # Counting the dashes would cut at "Ok — —"; only "Ok" and "sure" are words.
    assert split("Ok — — — — sure, fine.", min_first_words=2) == ["Ok — — — — sure,", "fine."]
    assert split("Ok — — — — sure, fine.", min_first_words=3) == ["Ok — — — — sure, fine."]


@pytest.mark.parametrize("seed", range(5))
def test_no_text_is_lost_whatever_the_deltas(seed: int) -> None:
    text = (
        "Sure! Dr. Who said, e.g., that 3.14 is pi... Really? Yes: the U.S. team won.\n"
        "- First item\n- Second item, with a comma\n" + " ".join(["word"] * 45) + ". The end"
    )
    rng = random.Random(seed)
    splitter = PhraseSplitter()
    phrases: list[str] = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 12)
        phrases += splitter.push(text[i : i + n])
        i += n
    rest = splitter.flush()
    phrases += [rest] if rest else []
    assert " ".join(phrases).split() == text.split()
    assert all(p == p.strip() and p for p in phrases)
    assert all(len(p.split()) <= 30 for p in phrases)
    assert phrases == split(text, step=len(text))  # the same cuts as one big delta


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        PhraseSplitter(min_first_words=0)
    with pytest.raises(ValueError):
        PhraseSplitter(max_words=1)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("**Paris** is the _capital_.", "Paris is the capital."),
        ("## Answer\nIt is `42`.", "Answer It is 42."),
        ("- one\n* two\n+ three\n1. four\n2) five", "one two three four five"),
        ("Great job 🎉👍🏽! ✅ Done ⭐", "Great job! Done"),
        ("Family: 👨‍👩‍👧 and flag 🇫🇷.", "Family: and flag."),
        ("See https://example.com/a?b=c. Or www.x.org, ok", "See link. Or link, ok"),
        ("Read [the docs](https://docs.example.com) now", "Read the docs now"),
        ("> quoted text", "quoted text"),
        ("a\n\n  b\t c", "a b c"),
        ("snake_case ~~old~~ | cell |", "snake case old cell"),
        ("---", ""),
        ("🎉🎉", ""),
        ("", ""),
        ("It costs $3.50, about 20% off.", "It costs $3.50, about 20% off."),
        ('Don\'t say "no" (please).', 'Don\'t say "no" (please).'),
    ],
)
def test_clean_for_speech(text: str, want: str) -> None:
    assert clean_for_speech(text) == want


def test_first_phrase_can_be_forced_short_at_a_word_boundary() -> None:
    splitter = PhraseSplitter(first_max_words=4)
    phrases: list[str] = []
    text = "There are 24 minutes in a day. That is a lot of minutes and more"
    for token in text.split():
        phrases += splitter.push(token + " ")
    phrases.append(splitter.flush() or "")
    assert phrases[0] == "There are 24 minutes"
    assert phrases[1] == "in a day."
    assert " ".join(phrases) == "There are 24 minutes in a day. That is a lot of minutes and more"
