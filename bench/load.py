"""Load benchmark: many concurrent spoken conversations against a Realtime server.

    python -m bench.load --url ws://127.0.0.1:8000/v1/realtime --sessions 10 --turns 3 \\
        --config configs/fake-gpu.yaml --barge-in-every 3 --plots bench/results/
    python -m bench.load --sweep 1,10,50 --turns 3 --config configs/fake-gpu.yaml --plots bench/results/
    python -m bench.load plot bench/results/load-*.json --out bench/results/latency_vs_sessions.png

N sessions (one WebSocket and one asyncio task each, started staggered over ``--ramp-s``)
each hold an M-turn spoken conversation in real time (``bench.load_client``). Questions are
spoken by Piper once, before any session starts. The run writes a JSON report
(``bench.load_report.LoadReport``), prints a one-screen summary, and with ``--plots`` draws
PNG charts (``bench.plots``). ``--config`` names the Serve config the server runs: with fake
backends, their scripted delays are subtracted to give the orchestration overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.baseline import DEFAULT_QUESTIONS, synthesize_questions
from bench.load_client import SessionClient, Utterance
from bench.load_report import (
    CLIENT_FIGURES,
    OVERHEAD,
    SEND_LAG,
    WALL_OVERHEAD,
    FakeProfile,
    LoadReport,
    LoadSettings,
    TurnRecord,
    summarize,
)
from serve_app.client.talk import DEFAULT_URL, VOICED_DBFS

DEFAULT_INTERRUPTION = "Wait, stop. Tell me something else."
DEFAULT_OUT = Path("bench/results/load.json")


async def run_load(
    settings: LoadSettings,
    questions: Sequence[Utterance],
    interruption: Utterance,
    progress: bool = True,
) -> LoadReport:
    """Run ``settings.sessions`` simulated users against ``settings.url`` and summarize them.

    Failed turns (timeouts, error events, a dropped connection) are recorded, never raised, and
    every turn is bounded by ``settings.turn_timeout_s``, so the run always ends by itself.

    Args:
        settings: What to run.
        questions: The spoken questions, asked in turn (session ``i`` starts at question ``i``).
        interruption: What a user says when barging in.
        progress: Show a tqdm bar (turns done / total) on stderr.
    """
    from tqdm import tqdm

    clients = [SessionClient(i, settings, questions, interruption) for i in range(settings.sessions)]
    bar = tqdm(total=settings.sessions * settings.turns, unit="turn", file=sys.stderr, disable=not progress)
    failed = 0

    def on_turn(record: TurnRecord) -> None:
        nonlocal failed
        failed += not record.ok
        bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        per_session = await asyncio.gather(*(c.run(on_turn) for c in clients))
    finally:
        bar.close()
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    records = [r for session in per_session for r in session]
    lags = [round(c.mic.max_lag_s * 1000, 1) for c in clients if c.mic is not None]
    return LoadReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=platform.platform(),
        config=settings,
        send_lag_ms=lags,
        turns=records,
        summary=summarize(
            records,
            settings,
            sessions_connected=sum(c.connected for c in clients),
            wall_s=wall_s,
            client_cpu_s=cpu_s,
            send_lag_ms=lags,
        ),
    )


async def prepare_speech(
    questions: Sequence[str], interruption: str, threshold_dbfs: float = VOICED_DBFS
) -> tuple[list[Utterance], Utterance]:
    """Speak the questions and the interruption with the bundled Piper voice, once, up front."""
    texts = [*questions, interruption]
    pcms = await synthesize_questions(texts, leading_s=0.0, trailing_s=0.0)
    spoken = [Utterance.from_pcm(text, pcm, threshold_dbfs) for text, pcm in zip(texts, pcms, strict=True)]
    return spoken[:-1], spoken[-1]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def render_summary(report: LoadReport) -> str:
    """The one-screen text summary of a run."""
    c, s = report.config, report.summary
    lines = [
        f"voxray load: {c.sessions} session(s) x {c.turns} turn(s) against {c.url}"
        + (f"  (server config {c.config})" if c.config else ""),
        f"turns: {s.turns_ok} ok, {s.turns_failed} failed of {s.turns_total}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in s.failures.items())})" if s.failures else "")
        + f"   sessions connected: {s.sessions_connected}/{s.sessions}   wall {s.wall_s:.1f} s",
        f"client: {s.client_cpu_s:.1f} s CPU = {s.client_cpu_pct:.0f}% of one core"
        + ("  (near saturation: client figures may be inflated)" if s.client_cpu_pct > 80 else ""),
        f"endpointing silence: {_fmt(s.silence_duration_ms)} ms",
    ]
    if c.profile is not None:
        p = c.profile
        lines.append(
            f"fake model time before first audio: {p.model_ms:.0f} ms = ASR {p.asr_delay_ms:g} + LLM first "
            f"token {p.llm_first_token_ms:g} + first phrase {p.llm_first_phrase_ms:g} + TTS first chunk "
            f"{p.tts_first_chunk_ms:g}"
        )
    lines += ["", f"{'figure (ms)':<42}{'n':>5}{'p50':>8}{'p95':>8}{'max':>8}"]
    needs_profile = (OVERHEAD, WALL_OVERHEAD)
    shown = [k for k in (*CLIENT_FIGURES, SEND_LAG) if k not in needs_profile or c.profile is not None]
    rows = [(k, s.figures[k]) for k in shown if k in s.figures]
    rows += [(f"server {k}", v) for k, v in s.server.items()]
    for name, st in rows:
        lines.append(f"{name:<42}{st.n:>5}{_fmt(st.p50):>8}{_fmt(st.p95):>8}{_fmt(st.max):>8}")
    lines.append("")
    lines.append(f"audio continuity: {s.turns_with_gaps} of {s.turns_ok} turns had a playback gap")
    if s.barge_ins:
        lines.append(f"barge-in: {s.barge_ins_cancelled} of {s.barge_ins} interrupted replies cancelled")
    if s.timeline_p50:
        lines.append("median timeline, ms after the last voiced frame:")
        lines += [f"  {v:>6.0f}  {k}" for k, v in s.timeline_p50.items()]
    return "\n".join(lines)


def _settings(args: argparse.Namespace, sessions: int, profile: FakeProfile | None) -> LoadSettings:
    return LoadSettings(
        url=args.url,
        sessions=sessions,
        turns=args.turns,
        questions=list(args.questions),
        interruption=args.interruption,
        pause_s=args.pause_s,
        ramp_s=args.ramp_s,
        barge_in_every=args.barge_in_every,
        barge_in_after_s=args.barge_in_after_s,
        turn_timeout_s=args.turn_timeout,
        jitter_buffer_ms=args.jitter_buffer_ms,
        config=None if args.config is None else str(args.config),
        profile=profile,
        seed=args.seed,
    )


def _write(report: LoadReport, out: Path, plots: Path | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.model_dump_json(indent=2))
    print(f"results: {out}", file=sys.stderr)
    if plots is not None:
        from bench.plots import plot_breakdown, plot_histogram

        plots.mkdir(parents=True, exist_ok=True)
        for path in (
            plot_histogram(report, plots / f"{out.stem}-latency.png"),
            plot_breakdown(report, plots / f"{out.stem}-stages.png"),
        ):
            if path is not None:
                print(f"plot: {path}", file=sys.stderr)


async def _run(args: argparse.Namespace) -> int:
    profile = None if args.config is None else FakeProfile.from_serve_config(args.config)
    print(f"synthesizing {len(args.questions) + 1} phrase(s) with Piper ...", file=sys.stderr)
    questions, interruption = await prepare_speech(args.questions, args.interruption, args.threshold_dbfs)
    counts = args.sweep or [args.sessions]
    reports: list[LoadReport] = []
    for i, sessions in enumerate(counts):
        if i:
            await asyncio.sleep(args.rest_s)  # let the server settle between loads
        report = await run_load(_settings(args, sessions, profile), questions, interruption, not args.quiet)
        reports.append(report)
        print(render_summary(report) + "\n")
        out = args.out if not args.sweep else args.out.with_name(f"{args.out.stem}-{sessions}.json")
        _write(report, out, args.plots)
    if args.sweep and args.plots is not None:
        from bench.plots import plot_latency_vs_sessions

        path = plot_latency_vs_sessions(reports, args.plots / f"{args.out.stem}-latency_vs_sessions.png")
        print(f"plot: {path}", file=sys.stderr)
    return 0 if all(r.summary.turns_ok for r in reports) else 1


def _sweep(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated session counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("session counts must be >= 1")
    return counts


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of a load run (``plot`` has its own, see :func:`main`)."""
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=DEFAULT_URL, help=f"Realtime WebSocket URL (default {DEFAULT_URL})")
    p.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    p.add_argument("--turns", type=int, default=3, help="turns per session (default 3)")
    p.add_argument("--sweep", type=_sweep, metavar="N,N,...", help="run these session counts in sequence")
    p.add_argument("--config", type=Path, help="the Serve config the server runs (fake delays -> overhead)")
    p.add_argument("--questions", nargs="+", default=list(DEFAULT_QUESTIONS), metavar="TEXT")
    p.add_argument("--interruption", default=DEFAULT_INTERRUPTION, help="what a barging-in user says")
    p.add_argument("--barge-in-every", type=int, default=0, metavar="K", help="interrupt every Kth turn")
    p.add_argument("--barge-in-after-s", type=float, default=0.4, help="after the first reply audio")
    p.add_argument("--pause-s", type=float, default=1.5, help="mean pause after a reply (jittered ±50%%)")
    p.add_argument("--ramp-s", type=float, default=2.0, help="spread session starts over this time")
    p.add_argument("--turn-timeout", type=float, default=60.0, help="seconds per turn (default 60)")
    p.add_argument("--jitter-buffer-ms", type=float, default=100.0, help="simulated player's buffer")
    p.add_argument("--threshold-dbfs", type=float, default=VOICED_DBFS, help="speech/silence level")
    p.add_argument("--rest-s", type=float, default=3.0, help="pause between the loads of a sweep")
    p.add_argument("--seed", type=int, default=0, help="seed of the pause jitter")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots into this directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _plot_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.load plot", description="Plot latency against sessions from several reports."
    )
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports of bench.load runs")
    p.add_argument("--out", type=Path, default=Path("bench/results/latency_vs_sessions.png"))
    args = p.parse_args(argv)
    from bench.plots import plot_latency_vs_sessions

    try:
        reports = [LoadReport.model_validate_json(path.read_text()) for path in args.reports]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(plot_latency_vs_sessions(reports, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a load (or a sweep), or ``plot`` saved reports; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return _plot_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 1 or args.barge_in_every < 0 or args.turn_timeout <= 0:
        parser.error("--sessions and --turns must be >= 1, --barge-in-every >= 0, --turn-timeout > 0")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
