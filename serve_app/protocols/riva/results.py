"""The live engine's timed words as Riva recognition results.

- A transcript is the words as text. A final one ends with a space, as Riva's do: NVIDIA's
  ``print_offline`` joins the results of a recording without a separator.
- Without ``enable_automatic_punctuation`` the punctuation Whisper writes is dropped (Riva
  adds punctuation only when asked); with it, a mark stays on the word before it, in the
  transcript and in ``words``. A contraction Whisper's word times split (``o`` ``'clock``)
  is one word again.
- ``words`` (with ``enable_word_time_offsets``, or diarization: the tags ride on them) carry
  start and end in milliseconds of the stream, the word's confidence and, with diarization,
  its ``speaker_tag`` (1, 2, …).
- ``channel_tag`` is 1: voxray recognizes one (mixed-down) channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from serve_app.engine.events import TimedWord
from serve_app.engine.live.words import text_of
from serve_app.protocols.grpc_api.proto import riva_asr_pb2
from serve_app.protocols.riva.options import RivaOptions

CHANNEL_TAG = 1
MIN_STABILITY = 0.01  # 0.0 means "not set" in Riva's results
_APOSTROPHES = "'’"


def _bare(text: str) -> str:
    """A word without the punctuation at its ends (``"¿Qué"`` → ``"Qué"``, ``don't`` kept)."""
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def _join(first: TimedWord, second: TimedWord) -> TimedWord:
    return dataclasses.replace(first, text=first.text + second.text, end_ms=max(first.end_ms, second.end_ms))


def _continues(text: str) -> bool:
    """Whether a word is the rest of the one before it (Whisper splits ``o'clock`` as ``o`` ``'clock``)."""
    return len(text) > 1 and text[0] in _APOSTROPHES and text[1].isalnum()


def shown_words(words: Sequence[TimedWord], punctuation: bool) -> list[TimedWord]:
    """The words as the client wants them: marks on the word before them, or dropped."""
    out: list[TimedWord] = []
    for word in words:
        if out and _continues(word.text):
            out[-1] = _join(out[-1], word)
            continue
        if word.is_punctuation:
            if punctuation and out:
                out[-1] = _join(out[-1], word)
            continue
        text = word.text if punctuation else _bare(word.text)
        if text:
            out.append(dataclasses.replace(word, text=text))
    return out


def _alternative(
    words: list[TimedWord], options: RivaOptions, final: bool
) -> riva_asr_pb2.SpeechRecognitionAlternative:
    transcript = text_of(words) + (" " if final else "")
    alternative = riva_asr_pb2.SpeechRecognitionAlternative(transcript=transcript)
    if final:
        alternative.confidence = sum(w.confidence for w in words) / len(words)
    if options.word_offsets:
        for word in words:
            alternative.words.append(
                riva_asr_pb2.WordInfo(
                    word=word.text,
                    start_time=round(word.start_ms),
                    end_time=round(word.end_ms),
                    confidence=word.confidence,
                    speaker_tag=(word.speaker or 1) if options.diarization else 0,
                )
            )
    return alternative


def streaming_result(
    words: Sequence[TimedWord],
    options: RivaOptions,
    *,
    final: bool,
    audio_processed_s: float,
    stable_words: int = 0,
) -> riva_asr_pb2.StreamingRecognitionResult | None:
    """One ``StreamingRecognitionResult``; ``None`` when nothing is left to show.

    Args:
        words: The engine's words (final words, or a partial's words).
        options: What the client asked for.
        final: ``is_final``.
        audio_processed_s: Audio received so far, in seconds.
        stable_words: Of a partial: how many leading words two decodes agreed on; the
            result's ``stability`` is their share.
    """
    shown = shown_words(words, options.punctuation)
    if not shown:
        return None
    result = riva_asr_pb2.StreamingRecognitionResult(
        alternatives=[_alternative(shown, options, final)],
        is_final=final,
        channel_tag=CHANNEL_TAG,
        audio_processed=audio_processed_s,
    )
    if not final:
        result.stability = max(MIN_STABILITY, min(1.0, stable_words / len(words)))
    return result


def speech_result(
    words: Sequence[TimedWord], options: RivaOptions, audio_processed_s: float
) -> riva_asr_pb2.SpeechRecognitionResult | None:
    """One utterance of ``Recognize`` as a ``SpeechRecognitionResult``; ``None`` when it said nothing."""
    shown = shown_words(words, options.punctuation)
    if not shown:
        return None
    return riva_asr_pb2.SpeechRecognitionResult(
        alternatives=[_alternative(shown, options, final=True)],
        channel_tag=CHANNEL_TAG,
        audio_processed=audio_processed_s,
    )
