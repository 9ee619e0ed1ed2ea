"""Soak benchmark: many sessions, with churn, for minutes; the server's memory over time, and leaks.

    python -m bench.soak --url ws://127.0.0.1:8000/v1/realtime --sessions 20 --duration-s 300 \\
        --config configs/fake-zero.yaml --out bench/results/soak.json --plot bench/results/soak.png
    python -m bench.soak plot bench/results/soak.json --out bench/results/soak.png

``--sessions`` simulated users (``bench.load_client``: real-time microphones streaming Piper
speech) talk turn after turn. Each session lasts a random ``--min-turns``..``--max-turns`` turns
and is then replaced by a new connection, so connect/disconnect leaks show; a share of them
(``--hang-up-fraction``) end by hanging up while reply audio is arriving, half with a close frame
and half by dropping TCP without one. Every ``--interval-s`` the RSS and CPU of each server process
(``bench.soak_procs``) and the Ingress's live session count (``/healthz``) are sampled. After
``--duration-s`` every client leaves and sampling goes on for ``--grace-s``: live sessions must be
back to 0. The verdict per process (``bench.soak_report.judge``) and its rule are printed; the
time series goes to ``--out`` (JSON, ``SoakReport``) and a chart to ``--plot``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import platform
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.baseline import DEFAULT_QUESTIONS
from bench.load import DEFAULT_INTERRUPTION, prepare_speech
from bench.load_client import HUNG_UP, HangUp, SessionClient, Utterance
from bench.load_report import FakeProfile, LoadSettings, TurnRecord
from bench.soak_procs import ProcSampler, find_server_root, healthz_sessions
from bench.soak_report import (
    LeakRule,
    Phase,
    Sample,
    SoakReport,
    SoakSettings,
    Tally,
    judge,
    labels,
    passed,
    rejudge,
    render,
    sessions_zero_after,
)
from serve_app.client.talk import DEFAULT_URL

DEFAULT_OUT = Path("bench/results/soak.json")


def healthz_url(ws_url: str) -> str:
    """``ws://host:port/v1/realtime`` -> ``http://host:port/healthz``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/healthz", "", ""))


class Churn:
    """Keeps ``sessions`` clients talking: each that ends is replaced by a new connection."""

    def __init__(
        self,
        settings: SoakSettings,
        load: LoadSettings,
        questions: Sequence[Utterance],
        interruption: Utterance,
        seed: int,
    ) -> None:
        self.settings, self.load = settings, load
        self.questions, self.interruption = questions, interruption
        self.rng = random.Random(seed)
        self.tally = Tally()

    def on_turn(self, record: TurnRecord) -> None:
        """Count one ended turn by outcome."""
        t, error = self.tally, record.error or "unknown"
        if record.ok:
            t.turns_ok += 1
        elif error.startswith(HUNG_UP):  # the session ended on purpose: not a failure
            if "abrupt" in error:
                t.hung_up_abrupt += 1
            else:
                t.hung_up_close += 1
        else:
            t.turns_failed += 1
            cause = error.split(":")[0]
            t.turns_timed_out += cause == "timeout"
            t.failures[cause] = t.failures.get(cause, 0) + 1

    @property
    def turns_done(self) -> int:
        """Turns that have ended, whatever their outcome."""
        t = self.tally
        return t.turns_ok + t.turns_failed + t.hung_up_abrupt + t.hung_up_close

    async def slot(self, slot: int) -> None:
        """Run sessions one after another in this slot until cancelled."""
        s, n = self.settings, self.settings.sessions
        for generation in itertools.count():
            turns = self.rng.randint(s.min_turns, s.max_turns)
            hang_up = None
            if self.rng.random() < s.hang_up_fraction:
                hang_up = HangUp(
                    turn=turns - 1, after_s=self.rng.uniform(0.1, 1.5), abrupt=self.rng.random() < 0.5
                )
            # Only the first generation ramps in (SessionClient waits ramp_s * index / sessions).
            load = self.load.model_copy(
                update={"turns": turns, "ramp_s": self.load.ramp_s if not generation else 0}
            )
            client = SessionClient(slot + n * generation, load, self.questions, self.interruption, hang_up)
            self.tally.sessions_opened += 1
            try:
                await client.run(self.on_turn)
            except asyncio.CancelledError:
                self.tally.cut_at_end += 1
                raise
            finally:
                self.tally.sessions_connected += client.connected
            if not client.connected:
                await asyncio.sleep(1.0)  # the server is not answering: do not spin on connects


async def run_soak(
    settings: SoakSettings,
    rule: LeakRule,
    load: LoadSettings,
    questions: Sequence[Utterance],
    interruption: Utterance,
    seed: int = 0,
) -> SoakReport:
    """Run the soak and judge it; see the module docstring."""
    sampler = ProcSampler(settings.root_pid) if settings.root_pid is not None else None
    churn = Churn(settings, load, questions, interruption, seed)
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    phase: Phase = "warmup"

    async def take_sample() -> Sample:
        procs = await asyncio.to_thread(sampler.sample, time.monotonic()) if sampler is not None else {}
        live = await asyncio.to_thread(healthz_sessions, settings.healthz_url)
        sample = Sample(
            t_s=round(loop.time() - start, 1), phase=phase, sessions_live=live,
            sessions_opened=churn.tally.sessions_opened, turns_done=churn.turns_done, procs=procs,
        )  # fmt: skip
        samples.append(sample)
        t, ingress = churn.tally, procs.get("Ingress")
        print(
            f"[{sample.t_s:6.0f} s {phase:<6}] live {live}  opened {t.sessions_opened}  "
            f"turns {t.turns_ok} ok {t.turns_failed} failed"
            + (f"  Ingress {ingress.rss_mb:.0f} MB" if ingress else ""),
            file=sys.stderr,
        )
        return sample

    async def sample_forever() -> None:
        while True:
            tick = loop.time()
            await take_sample()
            await asyncio.sleep(max(0.0, tick + settings.interval_s - loop.time()))

    await take_sample()  # the server before any session
    cpu0, wall0 = time.process_time(), time.monotonic()
    sampling = asyncio.create_task(sample_forever())
    slots = [asyncio.create_task(churn.slot(i)) for i in range(settings.sessions)]
    await asyncio.sleep(settings.warmup_s)
    phase = "load"
    await asyncio.sleep(max(0.0, settings.duration_s - settings.warmup_s))
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    await take_sample()  # the end of the load, exactly
    client_cpu = 100 * (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0)
    phase = "drain"
    for task in slots:  # every client leaves at once, with a close frame
        task.cancel()
    await asyncio.gather(*slots, return_exceptions=True)
    drain_end = loop.time() + settings.grace_s
    await take_sample()
    while loop.time() < drain_end:
        await asyncio.sleep(min(settings.interval_s, max(0.0, drain_end - loop.time())))
        await take_sample()
    verdicts = [judge(samples, label, rule) for label in labels(samples)]
    sessions_after = samples[-1].sessions_live
    return SoakReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=platform.platform(),
        settings=settings,
        rule=rule,
        samples=samples,
        verdicts=verdicts,
        tally=churn.tally,
        sessions_after=sessions_after,
        sessions_zero_after_s=sessions_zero_after(samples),
        client_cpu_pct=round(client_cpu, 1),
        passed=passed(verdicts, sessions_after, churn.tally),
    )


async def _run(args: argparse.Namespace) -> int:
    port = urlsplit(args.url).port or (443 if args.url.startswith("wss") else 80)
    root = args.root_pid if args.root_pid is not None else find_server_root(port)
    if root is None:
        print(f"warning: no local process listens on port {port}: memory is not sampled", file=sys.stderr)
    settings = SoakSettings(
        url=args.url, healthz_url=args.healthz_url or healthz_url(args.url), sessions=args.sessions,
        duration_s=args.duration_s, warmup_s=args.warmup_s, grace_s=args.grace_s, interval_s=args.interval_s,
        min_turns=args.min_turns, max_turns=args.max_turns, hang_up_fraction=args.hang_up_fraction,
        barge_in_every=args.barge_in_every, pause_s=args.pause_s, turn_timeout_s=args.turn_timeout,
        config=None if args.config is None else str(args.config), root_pid=root,
    )  # fmt: skip
    load = LoadSettings(
        url=args.url, sessions=args.sessions, turns=1, questions=list(args.questions),
        interruption=DEFAULT_INTERRUPTION, pause_s=args.pause_s, ramp_s=args.ramp_s,
        barge_in_every=args.barge_in_every, barge_in_after_s=0.4, turn_timeout_s=args.turn_timeout,
        jitter_buffer_ms=100.0, config=settings.config,
        profile=None if args.config is None else FakeProfile.from_serve_config(args.config), seed=args.seed,
    )  # fmt: skip
    print(f"synthesizing {len(args.questions) + 1} phrase(s) with Piper ...", file=sys.stderr)
    questions, interruption = await prepare_speech(args.questions, DEFAULT_INTERRUPTION)
    rule = LeakRule(slope_mb_per_min=args.leak_slope, growth_mb=args.leak_growth)
    report = await run_soak(settings, rule, load, questions, interruption, args.seed)
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.model_dump_json(indent=2))
    print(f"results: {args.out}", file=sys.stderr)
    if args.plot is not None:
        from bench.soak_plot import plot_soak

        print(f"plot: {plot_soak(report, args.plot)}", file=sys.stderr)
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of a soak run (``plot`` has its own, see :func:`main`)."""
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=DEFAULT_URL, help=f"Realtime WebSocket URL (default {DEFAULT_URL})")
    p.add_argument("--healthz-url", help="the Ingress's /healthz (default: from --url)")
    p.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default 20)")
    p.add_argument("--duration-s", type=float, default=300.0, help="load time, warm-up included (300)")
    p.add_argument("--warmup-s", type=float, default=60.0, help="left out of the verdict's start (60)")
    p.add_argument("--grace-s", type=float, default=30.0, help="sampling after the clients left (30)")
    p.add_argument("--interval-s", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--min-turns", type=int, default=1, help="turns per session, at least (1)")
    p.add_argument("--max-turns", type=int, default=4, help="turns per session, at most (4)")
    p.add_argument("--hang-up-fraction", type=float, default=0.3, help="sessions that hang up mid-reply")
    p.add_argument("--barge-in-every", type=int, default=3, metavar="K", help="interrupt every Kth turn")
    p.add_argument("--pause-s", type=float, default=1.5, help="mean pause after a reply (jittered ±50%%)")
    p.add_argument("--ramp-s", type=float, default=5.0, help="spread the first sessions over this time")
    p.add_argument("--turn-timeout", type=float, default=30.0, help="seconds per turn (default 30)")
    p.add_argument("--config", type=Path, help="the Serve config the server runs (recorded)")
    p.add_argument("--questions", nargs="+", default=list(DEFAULT_QUESTIONS), metavar="TEXT")
    p.add_argument(
        "--root-pid", type=int, help="watch the processes under this pid (default: found from the port)"
    )
    p.add_argument("--leak-slope", type=float, default=LeakRule().slope_mb_per_min, help="MB/min (rule)")
    p.add_argument("--leak-growth", type=float, default=LeakRule().growth_mb, help="MB (rule)")
    p.add_argument("--seed", type=int, default=0, help="seed of session lengths, hang-ups and pauses")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the memory chart here")
    return p


def _plot_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak plot", description="Judge a saved soak report again and redraw its chart."
    )
    p.add_argument("report", type=Path, help="JSON report of a bench.soak run")
    p.add_argument("--out", type=Path, default=Path("bench/results/soak.png"))
    p.add_argument("--leak-slope", type=float, help="MB/min (default: the report's rule)")
    p.add_argument("--leak-growth", type=float, help="MB (default: the report's rule)")
    args = p.parse_args(argv)
    from bench.soak_plot import plot_soak

    try:
        report = SoakReport.model_validate_json(args.report.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rule = report.rule.model_copy(
        update={
            k: v
            for k, v in (("slope_mb_per_min", args.leak_slope), ("growth_mb", args.leak_growth))
            if v is not None
        }
    )
    report = rejudge(report, rule)
    print(render(report))
    print(plot_soak(report, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a soak, or ``plot`` a saved report; returns the exit code (0: passed)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return _plot_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.min_turns <= args.max_turns or args.sessions < 1 or not 0 <= args.hang_up_fraction <= 1:
        parser.error("need 1 <= --min-turns <= --max-turns, --sessions >= 1, 0 <= --hang-up-fraction <= 1")
    if not 0 <= args.warmup_s < args.duration_s or args.interval_s <= 0:
        parser.error("need 0 <= --warmup-s < --duration-s and --interval-s > 0")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
