"""Scoring of live transcripts against a dialogue's reference words (``bench.transcription``).

Everything here works on a recorded message log: each Speechmatics real-time message the
server sent, with its arrival time in seconds since the stream started (the moment the first
audio frame's audio began, so the audio at time ``x`` had been sent by time ``x``). A
reference word and a transcript word *match* when their normalised spellings are equal and
their time spans, widened by :data:`TIME_TOLERANCE_S`, overlap.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from bench.dialogues import Dialogue, RefWord
from bench.wer import normalize_words, word_errors

TIME_TOLERANCE_S = 0.5  # server word times come from its own alignment, not the reference's
DER_FRAME_S = 0.01
DER_COLLAR_S = 0.25  # the usual NIST collar, around each reference segment boundary
DER_BRIDGE_S = 0.3  # pauses between words of one speaker shorter than this stay speech


class LoggedMessage(BaseModel):
    """One server message and when it arrived (seconds since the stream started)."""

    t_s: float
    message: dict[str, Any]


class HypWord(BaseModel):
    """A word of a partial or final transcript."""

    text: str
    start_s: float
    end_s: float
    speaker: str | None
    final: bool
    arrival_s: float


def hyp_words(log: Sequence[LoggedMessage], final_only: bool = False) -> list[HypWord]:
    """The words of every ``AddPartialTranscript`` and ``AddTranscript`` in ``log``, in arrival order.

    A result whose content normalises to several words (``"well-known"``) shares its span.
    """
    words: list[HypWord] = []
    for logged in log:
        kind = logged.message.get("message")
        if kind not in ("AddTranscript", "AddPartialTranscript") or (final_only and kind != "AddTranscript"):
            continue
        for result in logged.message.get("results", []):
            if result.get("type") != "word" or not result.get("alternatives"):
                continue
            best = result["alternatives"][0]
            parts = normalize_words(best.get("content", ""))
            start, end = float(result["start_time"]), float(result["end_time"])
            step = (end - start) / max(len(parts), 1)
            words += [
                HypWord(
                    text=part,
                    start_s=start + k * step,
                    end_s=start + (k + 1) * step,
                    speaker=best.get("speaker"),
                    final=kind == "AddTranscript",
                    arrival_s=logged.t_s,
                )
                for k, part in enumerate(parts)
            ]
    return words


def matches(ref: RefWord, hyp: HypWord, tolerance_s: float = TIME_TOLERANCE_S) -> bool:
    """Same normalised word, and spans within ``tolerance_s`` of overlapping."""
    return (
        ref.text == hyp.text
        and hyp.start_s <= ref.end_s + tolerance_s
        and hyp.end_s >= ref.start_s - tolerance_s
    )


def first_appearance_latencies(refs: Sequence[RefWord], hyps: Sequence[HypWord]) -> list[float | None]:
    """For each reference word: arrival of the first partial or final holding it, minus its end.

    Args:
        refs: The reference words.
        hyps: All transcript words (:func:`hyp_words`), in arrival order.

    Returns:
        Seconds per reference word (negative when a partial guessed it early); ``None`` when
        no transcript ever held it.
    """
    out: list[float | None] = []
    for ref in refs:
        first = next((h for h in hyps if matches(ref, h)), None)
        out.append(None if first is None else first.arrival_s - ref.end_s)
    return out


def match_finals(refs: Sequence[RefWord], finals: Sequence[HypWord]) -> list[int | None]:
    """One-to-one matching of reference words to final words.

    All matching pairs are taken nearest first (by start time difference), each word at most
    once, so a repeated word ("yes yes") pairs with the occurrence at its own time.

    Returns:
        For each reference word, the index of its final word in ``finals``, or ``None``.
    """
    pairs = sorted(
        (abs(h.start_s - r.start_s), i, j)
        for i, r in enumerate(refs)
        for j, h in enumerate(finals)
        if matches(r, h)
    )
    out: list[int | None] = [None] * len(refs)
    used: set[int] = set()
    for _, i, j in pairs:
        if out[i] is None and j not in used:
            out[i] = j
            used.add(j)
    return out


def turn_final_latencies(
    refs: Sequence[RefWord], finals: Sequence[HypWord], matched: Sequence[int | None]
) -> tuple[list[float | None], int]:
    """For each turn: arrival of the final holding its last word, minus that word's end.

    When the last word was misheard, the first final whose words reach that word's end (less
    the tolerance) stands in: the one that finalised that stretch of audio.

    Returns:
        Seconds per turn (``None`` when no final reached it) and how many turns needed the
        stand-in.
    """
    stand_ins = 0
    out: list[float | None] = []
    for turn in sorted({r.turn for r in refs}):
        index, last = max(((i, r) for i, r in enumerate(refs) if r.turn == turn), key=lambda p: p[1].end_s)
        if matched[index] is not None:
            out.append(finals[matched[index]].arrival_s - last.end_s)
            continue
        covering = [h.arrival_s for h in finals if h.end_s >= last.end_s - TIME_TOLERANCE_S]
        stand_ins += 1
        out.append(min(covering) - last.end_s if covering else None)
    return out, stand_ins


def best_mapping(overlap: dict[tuple[int, str], float]) -> dict[str, int]:
    """The one-to-one hypothesis-label to reference-speaker mapping with the largest total overlap.

    Args:
        overlap: ``(reference speaker, hypothesis label) -> agreement`` (words or frames).

    Returns:
        Label -> speaker; labels left over (more labels than speakers) map to nothing.
    """
    speakers = sorted({s for s, _ in overlap})
    labels = sorted({h for _, h in overlap})
    best: tuple[float, dict[str, int]] = (-1.0, {})
    # Brute force: at most a handful of speakers and labels.
    for chosen in itertools.permutations(labels, min(len(labels), len(speakers))):
        for order in itertools.permutations(speakers, len(chosen)):
            mapping = dict(zip(chosen, order, strict=True))
            total = sum(overlap.get((s, h), 0.0) for h, s in mapping.items())
            if total > best[0]:
                best = (total, mapping)
    return best[1]


def speaker_accuracy(
    refs: Sequence[RefWord], finals: Sequence[HypWord], matched: Sequence[int | None]
) -> tuple[int, int]:
    """Matched reference words whose final speaker label maps to their speaker.

    Returns:
        ``(correct, matched)`` under :func:`best_mapping` of the labels.
    """
    pairs = [
        (ref.speaker, finals[i].speaker or "") for ref, i in zip(refs, matched, strict=True) if i is not None
    ]
    counts: dict[tuple[int, str], float] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0.0) + 1
    mapping = best_mapping(counts)
    return sum(mapping.get(label) == speaker for speaker, label in pairs), len(pairs)


def _activity(spans: dict[Any, list[tuple[float, float]]], frames: int) -> dict[Any, np.ndarray]:
    """Per speaker, a boolean frame mask of speech: word spans with short pauses bridged."""
    out = {}
    for who, items in spans.items():
        mask = np.zeros(frames, dtype=bool)
        merged: list[list[float]] = []
        for start, end in sorted(items):
            if merged and start - merged[-1][1] < DER_BRIDGE_S:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        for start, end in merged:
            mask[max(0, round(start / DER_FRAME_S)) : max(0, round(end / DER_FRAME_S))] = True
        out[who] = mask
    return out


def diarization_error_rate(
    refs: Sequence[RefWord], finals: Sequence[HypWord], collar_s: float = DER_COLLAR_S
) -> float | None:
    """Frame-level DER: (missed + false alarm + confusion) / reference speech, overlaps counted.

    Speech regions are the word spans (pauses under :data:`DER_BRIDGE_S` bridged) of the
    reference and of the final transcript, in :data:`DER_FRAME_S` frames; frames within
    ``collar_s`` of a reference region's start or end are not scored; labels are mapped to
    speakers one-to-one to maximise agreement (:func:`best_mapping`).

    Returns:
        The rate, or ``None`` when there is no scored reference speech.
    """
    end = max([r.end_s for r in refs] + [h.end_s for h in finals] + [0.0]) + 2 * collar_s
    frames = int(np.ceil(end / DER_FRAME_S))
    ref_spans: dict[int, list[tuple[float, float]]] = {}
    for r in refs:
        ref_spans.setdefault(r.speaker, []).append((r.start_s, r.end_s))
    hyp_spans: dict[str, list[tuple[float, float]]] = {}
    for h in finals:
        hyp_spans.setdefault(h.speaker or "", []).append((h.start_s, h.end_s))
    ref_act, hyp_act = _activity(ref_spans, frames), _activity(hyp_spans, frames)
    scored = np.ones(frames, dtype=bool)
    collar = round(collar_s / DER_FRAME_S)
    for mask in ref_act.values():
        for edge in np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))):
            scored[max(0, edge - collar) : edge + collar] = False
    overlap = {(s, h): float((ref_act[s] & hyp_act[h] & scored).sum()) for s in ref_act for h in hyp_act}
    mapping = best_mapping(overlap) if overlap else {}
    n_ref, n_hyp, n_correct = (np.zeros(frames, dtype=int) for _ in range(3))
    for mask in ref_act.values():
        n_ref += mask & scored
    for mask in hyp_act.values():
        n_hyp += mask & scored
    for label, speaker in mapping.items():
        n_correct += hyp_act[label] & ref_act[speaker] & scored
    if n_ref.sum() == 0:
        return None
    errors = np.maximum(n_ref, n_hyp) - n_correct
    return float(errors.sum() / n_ref.sum())


class DialogueScore(BaseModel):
    """The figures of one streamed dialogue.

    Attributes:
        partial_latency_ms: Per reference word found in any transcript (see
            :func:`first_appearance_latencies`).
        words_never_seen: Reference words no partial or final ever held.
        final_latency_ms: Per turn (see :func:`turn_final_latencies`).
        final_stand_ins: Turns whose last word was misheard (a covering final stood in).
        word_errors, ref_words: WER's numerator and denominator over the finals.
        speaker_correct, speaker_matched: :func:`speaker_accuracy`.
        der: :func:`diarization_error_rate` (``None`` without scored speech).
    """

    name: str
    speakers: int
    partial_latency_ms: list[float]
    words_never_seen: int
    final_latency_ms: list[float]
    final_stand_ins: int
    word_errors: int
    ref_words: int
    speaker_correct: int
    speaker_matched: int
    der: float | None

    @property
    def speaker_accuracy(self) -> float | None:
        """Correct over matched words, ``None`` when none matched."""
        return self.speaker_correct / self.speaker_matched if self.speaker_matched else None


def score_dialogue(dialogue: Dialogue, log: Sequence[LoggedMessage]) -> DialogueScore:
    """All figures of one dialogue from its message log."""
    refs = dialogue.words
    everything = hyp_words(log)
    finals = [h for h in everything if h.final]
    partial = first_appearance_latencies(refs, everything)
    matched = match_finals(refs, finals)
    final, stand_ins = turn_final_latencies(refs, finals, matched)
    correct, n_matched = speaker_accuracy(refs, finals, matched)
    in_order = sorted(finals, key=lambda h: h.start_s)
    return DialogueScore(
        name=dialogue.name,
        speakers=dialogue.speakers,
        partial_latency_ms=[round(1000 * x, 1) for x in partial if x is not None],
        words_never_seen=sum(x is None for x in partial),
        final_latency_ms=[round(1000 * x, 1) for x in final if x is not None],
        final_stand_ins=stand_ins,
        word_errors=word_errors(" ".join(r.text for r in refs), " ".join(h.text for h in in_order)),
        ref_words=len(refs),
        speaker_correct=correct,
        speaker_matched=n_matched,
        der=diarization_error_rate(refs, finals),
    )


class Distribution(BaseModel):
    """Median and 90th percentile (linear interpolation) of a list of values."""

    n: int
    p50: float | None = None
    p90: float | None = None


def distribution(values: Sequence[float]) -> Distribution:
    """:class:`Distribution` of ``values`` (rounded to 0.1)."""
    if not values:
        return Distribution(n=0)
    p50, p90 = np.percentile(np.asarray(values, dtype=float), [50, 90])
    return Distribution(n=len(values), p50=round(float(p50), 1), p90=round(float(p90), 1))
