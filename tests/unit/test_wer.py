"""The word error rate helper the real-model tests bound their transcripts with."""

from __future__ import annotations

import pytest

from bench.wer import describe_errors, normalize_words, word_error_rate, word_errors


def test_case_and_punctuation_are_not_words() -> None:
    assert normalize_words("What is the capital of France?") == [
        "what",
        "is",
        "the",
        "capital",
        "of",
        "france",
    ]
    assert normalize_words("  Hello, there!  ") == ["hello", "there"]
    assert normalize_words("What's the weather - well-known?") == [
        "what's",
        "the",
        "weather",
        "well",
        "known",
    ]
    assert normalize_words("It\u2019s 'quoted'.") == ["it's", "quoted"]
    assert normalize_words("...") == []


def test_substitutions_deletions_and_insertions_count_one_each() -> None:
    reference = "What is the capital of France?"
    assert word_errors(reference, "what is the capital of france") == 0
    assert word_errors(reference, "What is the capital of friends?") == 1  # substitution
    assert word_errors(reference, "What is capital of France?") == 1  # deletion
    assert word_errors(reference, "So what is the capital of France?") == 1  # insertion
    assert word_errors(reference, "capital France") == 4
    assert word_errors(reference, "") == 6
    assert word_errors("", "Thank you.") == 2
    assert word_errors("Yes.", "Yes. Yes. Yes.") == 2  # a looping transcript


def test_rate_is_over_all_reference_words() -> None:
    references = ["What is the capital of France?", "Hello there.", "Yes."]
    assert word_error_rate(references, ["what is the capital of france", "hello there", "yes"]) == 0.0
    assert word_error_rate(references, ["What is the capital of friends?", "Hello there.", "Yes."]) == 1 / 9
    assert word_error_rate(references, ["", "", ""]) == 1.0
    assert word_error_rate("Yes.", "Yes. Yes. Yes.") == 2.0  # one pair as strings
    assert word_error_rate(("Hello there.",), ("Hello their.",)) == 0.5


def test_rate_refuses_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference words"):
        word_error_rate(["?"], ["anything"])


def test_description_names_each_wrong_transcript() -> None:
    message = describe_errors(
        ["What is the capital of France?", "Hello there."], ["capital of friends", "Hello there"]
    )
    assert message.startswith("WER 50.0% (4 errors in 8 words); wrong: ")
    assert "'what is the capital of france' -> 'capital of friends' (4)" in message
    assert "hello there'" not in message  # right: not listed
    assert describe_errors(["Yes."], ["yes"]).endswith("wrong: none")
