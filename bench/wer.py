"""Word error rate: for `bench.asr_speed` and for tests that check what a real ASR model heard.

A real model's transcript can differ by a word between machines (int8 inference differs
between x86 CPUs: once Whisper base heard "What is the capital of friends?"), so tests
transcribe several sentences and bound the word error rate over all of them instead of
requiring one exact word. Case and punctuation never count as errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalize_words(text: str) -> list[str]:
    """The words of ``text``: lowercased, without punctuation.

    Apostrophes inside a word are kept ("what's" is one word, and not "whats"); hyphens and
    other punctuation separate words ("well-known" is "well known").

    Args:
        text: A reference sentence or a transcript.

    Returns:
        The words, in order.
    """
    words = re.sub(r"[^a-z0-9']+", " ", text.lower().translate(_APOSTROPHES)).split()
    return [w for w in (word.strip("'") for word in words) if w]


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance: the substitutions, deletions and insertions that turn
    ``reference`` into ``hypothesis`` (after :func:`normalize_words`).

    Args:
        reference: What was said.
        hypothesis: What the model heard.

    Returns:
        The number of word errors.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def word_error_rate(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Word errors over all pairs divided by the number of reference words.

    Args:
        references: What was said: one sentence, or several.
        hypotheses: What the model heard, one per reference.

    Returns:
        The rate: 0.0 when every word is right; above 1.0 when the model added words.

    Raises:
        ValueError: The counts differ, or there are no reference words.
    """
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    words = sum(len(normalize_words(r)) for r in refs)
    if words == 0:
        raise ValueError("no reference words")
    return sum(word_errors(r, h) for r, h in zip(refs, hyps, strict=True)) / words


def describe_errors(references: Sequence[str], hypotheses: Sequence[str]) -> str:
    """A message for a failed WER bound: the rate, then each wrong transcript.

    Args:
        references: What was said.
        hypotheses: What the model heard, one per reference.

    Returns:
        For example ``WER 2.0% (1 errors in 50 words); wrong: 'what is the capital of
        france' -> 'what is the capital of friends' (1)``.
    """
    words = sum(len(normalize_words(r)) for r in references)
    errors = [word_errors(r, h) for r, h in zip(references, hypotheses, strict=True)]
    wrong = [
        f"{' '.join(normalize_words(r))!r} -> {' '.join(normalize_words(h))!r} ({e})"
        for r, h, e in zip(references, hypotheses, errors, strict=True)
        if e
    ]
    rate = 100 * sum(errors) / max(1, words)
    return f"WER {rate:.1f}% ({sum(errors)} errors in {words} words); wrong: {'; '.join(wrong) or 'none'}"
