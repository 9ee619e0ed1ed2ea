"""The live-transcription benchmark's report: summary figures, capacity levels, table and plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from bench.transcription_score import DER_COLLAR_S, DialogueScore, Distribution, distribution

TARGET_PARTIAL_P50_MS = 700.0
TARGET_FINAL_P50_MS = 400.0
TARGET_SPEAKER_ACCURACY = {2: 0.90, 3: 0.80}


class Summary(BaseModel):
    """Figures over a set of streamed dialogues.

    Attributes:
        partial_latency_ms: Over every reference word found in any transcript.
        final_latency_ms: Over every turn.
        words_never_seen: Reference words that no transcript held, over all dialogues.
        wer: Word errors of the finals over reference words, all dialogues together.
        speaker_accuracy: Per speaker count (``"2"``, ``"3"``): correct over matched words.
        der_mean: Mean DER over dialogues (collar ``der_collar_s``).
    """

    dialogues: int
    partial_latency_ms: Distribution
    final_latency_ms: Distribution
    words_never_seen: int
    ref_words: int
    wer: float | None
    speaker_accuracy: dict[str, float | None]
    der_mean: float | None
    der_collar_s: float = DER_COLLAR_S


def summarize(scores: Sequence[DialogueScore]) -> Summary:
    """:class:`Summary` of ``scores``."""
    ref_words = sum(s.ref_words for s in scores)
    accuracy: dict[str, float | None] = {}
    for speakers in sorted({s.speakers for s in scores}):
        group = [s for s in scores if s.speakers == speakers]
        matched = sum(s.speaker_matched for s in group)
        accuracy[str(speakers)] = (
            round(sum(s.speaker_correct for s in group) / matched, 4) if matched else None
        )
    ders = [s.der for s in scores if s.der is not None]
    return Summary(
        dialogues=len(scores),
        partial_latency_ms=distribution([x for s in scores for x in s.partial_latency_ms]),
        final_latency_ms=distribution([x for s in scores for x in s.final_latency_ms]),
        words_never_seen=sum(s.words_never_seen for s in scores),
        ref_words=ref_words,
        wer=round(sum(s.word_errors for s in scores) / ref_words, 4) if ref_words else None,
        speaker_accuracy=accuracy,
        der_mean=round(sum(ders) / len(ders), 4) if ders else None,
    )


class CapacityLevel(BaseModel):
    """One load level of the capacity sweep: ``streams`` dialogues streamed at once.

    Attributes:
        kept_up: Every stream finished, the final latency p50 stayed within the bound, and
            the backlog did not grow (late turns' final latency p50 at most ``growth_bound_ms``
            above early turns').
        final_growth_ms: Final latency p50 over the second half of each stream's turns minus
            that over the first half: a server falling behind shows a growing lag.
        audio_ack_ms: ``AudioAdded`` arrival minus the frame's send time.
    """

    streams: int
    partial_latency_ms: Distribution
    final_latency_ms: Distribution
    audio_ack_ms: Distribution
    final_growth_ms: float | None
    failed_streams: int
    kept_up: bool
    reason: str = ""


class Settings(BaseModel):
    """How the run was made."""

    base_url: str
    config: str | None
    frame_ms: int
    dialogues: int
    capacity_levels: list[int]
    keep_up_final_p50_ms: float
    keep_up_growth_ms: float
    machine: str


class TranscriptionReport(BaseModel):
    """The whole benchmark result (``bench/results/transcription.json``)."""

    settings: Settings
    summary: Summary | None = None
    summary_by_speakers: dict[str, Summary] = Field(default_factory=dict)
    dialogues: list[DialogueScore] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)
    capacity: list[CapacityLevel] = Field(default_factory=list)
    capacity_streams: int | None = None


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def render(report: TranscriptionReport) -> str:
    """A plain-text table of the summary and the capacity levels."""
    lines = []
    s = report.summary
    if s is not None:
        lines += [
            f"{s.dialogues} dialogues, {s.ref_words} reference words",
            f"partial latency  p50 {_ms(s.partial_latency_ms.p50)} ms  p90 {_ms(s.partial_latency_ms.p90)} ms"
            f"  (n={s.partial_latency_ms.n}, target p50 <= {TARGET_PARTIAL_P50_MS:.0f};"
            f" {s.words_never_seen} words never seen)",
            f"final latency    p50 {_ms(s.final_latency_ms.p50)} ms  p90 {_ms(s.final_latency_ms.p90)} ms"
            f"  (n={s.final_latency_ms.n} turns, target p50 <= {TARGET_FINAL_P50_MS:.0f})",
            f"WER of finals    {_pct(s.wer)}",
        ]
        for speakers, accuracy in s.speaker_accuracy.items():
            target = TARGET_SPEAKER_ACCURACY.get(int(speakers))
            goal = f"  (target >= {100 * target:.0f} %)" if target else ""
            lines.append(f"speaker accuracy, {speakers} speakers  {_pct(accuracy)}{goal}")
        lines.append(f"DER (mean, collar {s.der_collar_s} s)  {_pct(s.der_mean)}")
    for name, error in report.errors.items():
        lines.append(f"FAILED {name}: {error}")
    if report.capacity:
        lines.append("capacity: streams | partial p50 | final p50 | final p90 | growth | ack p90 | kept up")
        for c in report.capacity:
            lines.append(
                f"  {c.streams:3d} | {_ms(c.partial_latency_ms.p50):>6} | {_ms(c.final_latency_ms.p50):>6}"
                f" | {_ms(c.final_latency_ms.p90):>6} | {_ms(c.final_growth_ms):>6}"
                f" | {_ms(c.audio_ack_ms.p90):>6}"
                f" | {'yes' if c.kept_up else 'NO: ' + c.reason}"
            )
        lines.append(f"real-time streams one node carries: {report.capacity_streams}")
    return "\n".join(lines)


def plot(report: TranscriptionReport, out: Path) -> Path:
    """Partial and final latency distributions, and speaker accuracy per dialogue (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    partial = [x for d in report.dialogues for x in d.partial_latency_ms]
    final = [x for d in report.dialogues for x in d.final_latency_ms]
    bins = 40
    if partial:
        left.hist(partial, bins=bins, alpha=0.6, label=f"partial, per word (n={len(partial)})")
    if final:
        left.hist(final, bins=bins, alpha=0.6, label=f"final, per turn (n={len(final)})")
    left.axvline(TARGET_PARTIAL_P50_MS, color="C0", linestyle="--", label="partial p50 target")
    left.axvline(TARGET_FINAL_P50_MS, color="C1", linestyle="--", label="final p50 target")
    left.set_xlabel("latency after the word's end (ms)")
    left.set_ylabel("count")
    left.set_title("Live transcript latency")
    left.legend(fontsize=8)
    names = [d.name.removeprefix("dialogue-") for d in report.dialogues]
    values = [100 * (d.speaker_accuracy or 0.0) for d in report.dialogues]
    colours = ["C2" if d.speakers == 2 else "C3" for d in report.dialogues]
    right.bar(range(len(values)), values, color=colours)
    handles = []
    for speakers, colour in ((2, "C2"), (3, "C3")):
        right.axhline(100 * TARGET_SPEAKER_ACCURACY[speakers], color=colour, linestyle="--", linewidth=1)
        handles.append(Patch(color=colour, label=f"{speakers} speakers"))
    right.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    right.set_ylim(0, 100)
    right.set_ylabel("speaker accuracy (%)")
    right.set_title("Speaker accuracy per dialogue (dashed: targets)")
    right.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
