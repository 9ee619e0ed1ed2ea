"""Which audio a live utterance's decodes and speaker embeddings cover.

Decodes start at the utterance's start while they can: Whisper hears whole phrases best. They
move up to a settled point when the window grows past ``max_window_ms`` (cost stays flat), and
when Whisper stopped early on a window holding two voices. Speaker embeddings of a short
stretch of final words take in the speech before it.
"""

from __future__ import annotations

from serve_app.engine.events import TimedWord
from serve_app.engine.live.settings import Utterance

# Speech this long after a decode's last word means Whisper stopped early (see stopped_early).
EARLY_STOP_MS = 1500.0
# A window moved up to a settled point starts this much before it: a settled point inside a
# word (Whisper's word times are approximate) would otherwise cut the next word's start. The
# words already final in that margin are dropped again (unsettled_words).
CONTEXT_MS = 300.0
# Words settled by max_delay go out in groups of up to this much more speech (settled_count).
GROUP_MS = 1000.0
# A stretch of final words shorter than this is embedded with the speech before it in its
# utterance: too short a stretch says little about who is speaking.
MIN_SPEAKER_AUDIO_MS = 1600.0


def stopped_early(utterance: Utterance, words: list[TimedWord], end_ms: float) -> bool:
    """Whether Whisper ended its transcript well before the audio; if so, move the window.

    On a window that holds two voices Whisper now and then stops after the first speaker's
    sentence. The words it gave are right, so the window moves up to the last settled point
    (the settled words are final already) and is decoded again.

    Args:
        utterance: Its ``window_ms`` moves when this returns True.
        words: The decode's words in stream time.
        end_ms: Where the speech in the decoded audio ends.
    """
    last_end = max((w.end_ms for w in words), default=utterance.window_ms)
    later = [cut for cut in utterance.cuts if cut - CONTEXT_MS > utterance.window_ms]
    if end_ms - last_end < EARLY_STOP_MS or not later:
        return False
    utterance.window_ms = later[-1] - CONTEXT_MS
    utterance.draft_head_ms = 0.0  # due again at once
    return True


def slide_window(utterance: Utterance, limit_ms: float) -> None:
    """Start decodes at a settled point when the window starts before ``limit_ms``.

    ``limit_ms`` is the newest audio minus ``max_window_ms``: the latest settled point that
    brings the window under the limit is taken, else the last one.
    """
    if utterance.window_ms >= limit_ms:
        return
    later = [cut - CONTEXT_MS for cut in utterance.cuts if cut - CONTEXT_MS > utterance.window_ms]
    if later:
        fitting = [start for start in later if start >= limit_ms]
        utterance.window_ms = fitting[0] if fitting else later[-1]


def speaker_start(utterance: Utterance, start_ms: float, end_ms: float) -> float:
    """Where the audio embedded for the words between two stream times starts."""
    return max(utterance.start_ms, min(start_ms, end_ms - MIN_SPEAKER_AUDIO_MS))
