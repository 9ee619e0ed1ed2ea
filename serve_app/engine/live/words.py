"""Words of live transcription: placing ASR output on the stream's timeline, and agreement.

Pure functions, no I/O: the streaming policy in :mod:`serve_app.engine.live.session` uses them
to turn each decode of the growing window into :class:`TimedWord` objects in stream time, and
to find the prefix that two successive decodes agree on (it is what gets settled early).
"""

from __future__ import annotations

from collections.abc import Sequence

from deployments.types import Transcript
from serve_app.engine.events import TimedWord
from serve_app.engine.live.settings import Utterance

_TRAILING = ".,!?;:…"
_SENTENCE_ENDS = (".", "?", "!", "…")


def normalize(text: str) -> str:
    """A word's spelling for comparison: lower case, letters and digits only."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def timed_words(transcript: Transcript, offset_ms: float, audio_ms: float) -> list[TimedWord]:
    """The transcript's words in stream time, punctuation split off as words of its own.

    Args:
        transcript: One decode of audio that starts at stream time ``offset_ms``.
        offset_ms: Where the decoded audio starts in the stream.
        audio_ms: How long the decoded audio is; words are clamped to it.

    Returns:
        Words in order. A backend without word times (``words`` empty) gets its text spread
        evenly over the audio, so every word still has plausible times.
    """
    end_ms = offset_ms + audio_ms
    if transcript.words:
        raw = [
            (w.text, offset_ms + w.start_s * 1000, offset_ms + w.end_s * 1000, w.confidence)
            for w in transcript.words
        ]
    else:
        tokens = transcript.text.split()
        step = audio_ms / max(1, len(tokens))
        raw = [(t, offset_ms + i * step, offset_ms + (i + 1) * step, 1.0) for i, t in enumerate(tokens)]
    words: list[TimedWord] = []
    for text, start, end, confidence in raw:
        start, end = min(start, end_ms), min(max(start, end), end_ms)
        core = text.rstrip(_TRAILING)
        if core and core != text:  # "Paris." -> "Paris", "."
            words.append(TimedWord(core, start, end, confidence))
            words.append(TimedWord(text[len(core) :], end, end, confidence))
        elif text:
            words.append(TimedWord(text, start, end, confidence))
    return words


def unsettled_words(words: list[TimedWord], utterance: Utterance) -> list[TimedWord]:
    """The decoded words of ``utterance`` not final yet: those after ``settled_ms`` by their middle.

    A punctuation mark first in line is the one that ended the settled words, seen again from
    the other side of the cut: it is dropped.
    """
    words = [w for w in words if (w.start_ms + w.end_ms) / 2 > utterance.settled_ms]
    while words and words[0].is_punctuation and utterance.final:
        words.pop(0)
    return words


def agreed_prefix(previous: Sequence[TimedWord], current: Sequence[TimedWord]) -> int:
    """How many leading words of ``current`` say what ``previous`` said (LocalAgreement-2).

    Punctuation counts as agreeing with punctuation whatever the mark: Whisper changes its
    mind about a comma more often than about a word.
    """
    count = 0
    for before, now in zip(previous, current, strict=False):
        same_mark = before.is_punctuation and now.is_punctuation
        same_word = bool(normalize(before.text)) and normalize(before.text) == normalize(now.text)
        if not (same_mark or same_word):
            break
        count += 1
    return count


def cut_points(words: Sequence[TimedWord], agreed: int) -> list[tuple[int, float, float]]:
    """Where the agreed words could be split: ``(count, gap_ms, cut_ms)`` for each pause.

    ``count`` words come before the pause, the pause lasts ``gap_ms`` (punctuation counts as
    silence: Whisper's alignment gives a sentence's pause to its full stop) and ``cut_ms`` is
    its middle, where the next decode may start without clipping a word. Only pauses followed
    by an agreed word count, so the words on both sides are known.
    """
    points: list[tuple[int, float, float]] = []
    last_end: float | None = None
    for i, word in enumerate(words[:agreed]):
        if word.is_punctuation:
            continue
        if last_end is not None and i > 0:
            gap = word.start_ms - last_end
            points.append((i, gap, last_end + max(0.0, gap) / 2))
        last_end = word.end_ms
    return points


def settled_count(
    words: Sequence[TimedWord], agreed: int, before_ms: float, pause_ms: float, group_ms: float = 0.0
) -> tuple[int, float]:
    """How many leading words to make final now, and the stream time they are final up to.

    Agreed words are settled up to a pause of at least ``pause_ms`` or an agreed sentence
    end (clear breaks: final at once). Once an agreed word ended by ``before_ms`` (older
    than ``max_delay``), the agreed words that ended by ``before_ms + group_ms`` are settled
    with it whatever follows them:
    a group of words a little early, rather than a word at a time (each final is a stretch
    of audio long enough to tell its speaker). A punctuation mark right after the last
    settled word goes with it.

    Returns:
        ``(count, settled_ms)``; ``(0, 0.0)`` when nothing can be settled.
    """
    count, settled_ms = 0, 0.0
    for point, gap, cut in cut_points(words, agreed):
        if gap >= pause_ms:
            count, settled_ms = point, cut
    for i, word in enumerate(words[:agreed]):
        if i >= count and word.text in _SENTENCE_ENDS:
            # A sentence end two decodes agree on: a turn often ends there without a pause
            # the VAD could hear (the next speaker starts at once, or talks over the end).
            count, settled_ms = i + 1, (word.start_ms + word.end_ms) / 2
    due = any(not w.is_punctuation and w.end_ms <= before_ms for w in words[count:agreed])
    for i, word in enumerate(words[:agreed]):
        if due and i >= count and not word.is_punctuation and word.end_ms <= before_ms + group_ms:
            count, settled_ms = i + 1, word.end_ms
    while count < agreed and words[count].is_punctuation:
        count += 1
        settled_ms = max(settled_ms, words[count - 1].start_ms)
    return count, settled_ms


def text_of(words: Sequence[TimedWord]) -> str:
    """Words joined as text: a space before each word, none before punctuation."""
    out: list[str] = []
    for word in words:
        if out and not word.is_punctuation:
            out.append(" ")
        out.append(word.text)
    return "".join(out)
