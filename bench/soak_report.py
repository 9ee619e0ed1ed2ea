"""Data and arithmetic of the soak benchmark (``bench.soak``): samples, slope fits, leak verdicts.

Everything here is pure (no sockets, no clocks, no /proc), so the verdicts can be checked on
synthetic series:

* :class:`Sample` is one look at the server: each process's RSS and CPU, and its live sessions.
* :func:`fit_slope` is the least-squares slope of a series, in MB per minute.
* :func:`judge` turns one process's RSS series into a :class:`ProcVerdict` under a
  :class:`LeakRule`, which states the rule it applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

Phase = Literal["warmup", "load", "drain"]


class ProcPoint(BaseModel):
    """One process kind at one instant (summed over its processes, e.g. an old and a new HAProxy)."""

    pids: list[int]
    rss_mb: float = Field(description="Resident set size (VmRSS), MB.")
    anon_mb: float = Field(description="Anonymous resident memory (RssAnon): heap, where leaks grow.")
    cpu_pct: float | None = Field(default=None, description="CPU since the previous sample, % of one core.")


class Sample(BaseModel):
    """The server at one instant of the run."""

    t_s: float = Field(description="Seconds since the first session started.")
    phase: Phase
    sessions_live: int | None = Field(default=None, description="/healthz `sessions`; None: unreachable.")
    sessions_opened: int = Field(default=0, description="Client sessions started so far.")
    turns_done: int = Field(default=0, description="Turns ended so far (any outcome).")
    procs: dict[str, ProcPoint] = Field(default_factory=dict)


class LeakRule(BaseModel):
    """When a process is called a suspected leak; both conditions must hold."""

    slope_mb_per_min: float = Field(default=1.0, description="RSS slope over the second half of the load.")
    growth_mb: float = Field(default=10.0, description="RSS at the end of the load minus after warm-up.")

    def describe(self) -> str:
        """The rule in words, printed with the verdict."""
        return (
            f"suspected leak = RSS slope over the second half of the load > {self.slope_mb_per_min:g} MB/min "
            f"AND RSS growth from the end of warm-up to the end of the load > {self.growth_mb:g} MB"
        )


class ProcVerdict(BaseModel):
    """What one process kind's memory did over the run."""

    label: str
    pids: list[int] = Field(
        description="Every pid seen under this label; more than one: restarts or reloads."
    )
    rss_start_mb: float | None = Field(default=None, description="First sample after warm-up.")
    rss_end_mb: float | None = Field(default=None, description="Last sample under load.")
    rss_after_mb: float | None = Field(default=None, description="Last sample, after the clients left.")
    growth_mb: float | None = None
    slope_mb_per_min: float | None = Field(
        default=None, description="Fitted over the second half of the load."
    )
    kb_per_session: float | None = Field(
        default=None,
        description="The fitted growth over the second half of the load per session opened in it: what a "
        "per-connection leak would cost each session.",
    )
    cpu_pct: float | None = Field(default=None, description="Mean CPU under load, % of one core.")
    verdict: str


class Tally(BaseModel):
    """What the clients did."""

    sessions_opened: int = 0
    sessions_connected: int = 0
    turns_ok: int = 0
    turns_failed: int = 0
    turns_timed_out: int = 0
    hung_up_abrupt: int = Field(
        default=0, description="Sessions that dropped TCP mid-reply (no close frame)."
    )
    hung_up_close: int = Field(default=0, description="Sessions that sent a close frame mid-reply.")
    cut_at_end: int = Field(default=0, description="Sessions still open when the load ended (closed then).")
    failures: dict[str, int] = Field(default_factory=dict, description="Failed turns by cause.")


class SoakSettings(BaseModel):
    """What one soak run was asked to do."""

    url: str
    healthz_url: str
    sessions: int = Field(description="Concurrent client sessions; each that ends is replaced.")
    duration_s: float = Field(description="Load time, warm-up included.")
    warmup_s: float
    grace_s: float = Field(description="Sampling after the clients left, for sessions to reach 0.")
    interval_s: float
    min_turns: int
    max_turns: int
    hang_up_fraction: float = Field(description="Share of sessions that end by hanging up mid-reply.")
    barge_in_every: int
    pause_s: float
    turn_timeout_s: float
    config: str | None = None
    root_pid: int | None = Field(default=None, description="The server's process tree was found under it.")


class SoakReport(BaseModel):
    """A whole soak run; written as JSON."""

    created_at: str
    host: str
    settings: SoakSettings
    rule: LeakRule
    samples: list[Sample]
    verdicts: list[ProcVerdict]
    tally: Tally
    sessions_after: int | None = Field(description="/healthz sessions at the end of the grace period.")
    sessions_zero_after_s: float | None = Field(
        default=None, description="Seconds after the clients left until /healthz first said 0."
    )
    client_cpu_pct: float | None = Field(
        default=None, description="The soak client's own CPU over the load, % of one core."
    )
    passed: bool


def fit_slope(t_s: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` against ``t_s`` (seconds), per minute.

    Returns:
        ``None`` with fewer than two points or no spread in time.
    """
    if len(t_s) != len(values):
        raise ValueError(f"{len(t_s)} times but {len(values)} values")
    if len(t_s) < 2:
        return None
    t = np.asarray(t_s, dtype=float)
    if float(np.ptp(t)) == 0.0:
        return None
    slope, _ = np.polyfit(t, np.asarray(values, dtype=float), 1)
    return float(slope) * 60


def series(samples: Sequence[Sample], label: str, phase: Phase | None = None) -> list[tuple[float, float]]:
    """``(t_s, rss_mb)`` of one process kind, optionally of one phase only."""
    return [
        (s.t_s, s.procs[label].rss_mb)
        for s in samples
        if label in s.procs and (phase is None or s.phase == phase)
    ]


def judge(samples: Sequence[Sample], label: str, rule: LeakRule) -> ProcVerdict:
    """The memory verdict of one process kind.

    Start is the first sample after warm-up, end the last one under load, and the slope is fitted
    over the samples in the second half (by time) of the load after warm-up, where start-up
    allocations (imports, caches, the first sessions' buffers) have settled.
    """
    pids = sorted({pid for s in samples if label in s.procs for pid in s.procs[label].pids})
    load = series(samples, label, "load")
    if not load:
        return ProcVerdict(label=label, pids=pids, verdict="no samples under load")
    after = series(samples, label)[-1][1]
    (t_start, start), (t_end, end) = load[0], load[-1]
    middle = (t_start + t_end) / 2
    half = [s for s in samples if s.phase == "load" and label in s.procs and s.t_s >= middle]
    slope = fit_slope([s.t_s for s in half], [s.procs[label].rss_mb for s in half])
    opened = half[-1].sessions_opened - half[0].sessions_opened if half else 0
    per_session = None
    if slope is not None and opened > 0:
        per_session = slope / 60 * (half[-1].t_s - half[0].t_s) * 1024 / opened
    cpu = [
        p.cpu_pct
        for s in samples
        if s.phase == "load" and (p := s.procs.get(label)) and p.cpu_pct is not None
    ]
    growth = end - start
    leak = slope is not None and slope > rule.slope_mb_per_min and growth > rule.growth_mb
    if leak:
        verdict = "SUSPECTED LEAK"
    elif slope is None:
        verdict = "too few samples"
    else:
        verdict = "ok"
    if len(pids) > 1:
        verdict += f" ({len(pids)} pids: restarted or reloaded)"
    return ProcVerdict(
        label=label,
        pids=pids,
        rss_start_mb=round(start, 1),
        rss_end_mb=round(end, 1),
        rss_after_mb=round(after, 1),
        growth_mb=round(growth, 1),
        slope_mb_per_min=None if slope is None else round(slope, 2),
        kb_per_session=None if per_session is None else round(per_session, 1),
        cpu_pct=round(float(np.mean(cpu)), 1) if cpu else None,
        verdict=verdict,
    )


def labels(samples: Sequence[Sample]) -> list[str]:
    """Every process kind seen, in order of first appearance."""
    seen: dict[str, None] = {}
    for s in samples:
        seen.update(dict.fromkeys(s.procs))
    return list(seen)


def sessions_zero_after(samples: Sequence[Sample]) -> float | None:
    """Seconds from the end of the load (the clients' leaving) until /healthz first reported 0 sessions."""
    drain = [s for s in samples if s.phase == "drain"]
    load = [s for s in samples if s.phase != "drain"]
    if not drain or not load:
        return None
    start = load[-1].t_s
    return next((round(s.t_s - start, 1) for s in drain if s.sessions_live == 0), None)


def passed(verdicts: Sequence[ProcVerdict], sessions_after: int | None, tally: Tally) -> bool:
    """No suspected leak, the server's live sessions back to 0, and at least one turn answered."""
    return (
        not any(v.verdict.startswith("SUSPECTED") for v in verdicts)
        and sessions_after == 0
        and tally.turns_ok > 0
    )


def rejudge(report: SoakReport, rule: LeakRule | None = None) -> SoakReport:
    """The report with its verdicts recomputed from its samples, under ``rule`` (default: its own)."""
    rule = report.rule if rule is None else rule
    verdicts = [judge(report.samples, label, rule) for label in labels(report.samples)]
    return report.model_copy(
        update={
            "rule": rule,
            "verdicts": verdicts,
            "passed": passed(verdicts, report.sessions_after, report.tally),
        }
    )


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def render(report: SoakReport) -> str:
    """The verdict table and the tallies, as printed at the end of a run."""
    st, t = report.settings, report.tally
    lines = [
        f"voxray soak: {st.sessions} sessions for {st.duration_s:g} s (warm-up {st.warmup_s:g} s, grace "
        f"{st.grace_s:g} s) against {st.url}" + (f"  (server config {st.config})" if st.config else ""),
        f"sessions: {t.sessions_opened} opened, {t.sessions_connected} connected; hung up mid-reply: "
        f"{t.hung_up_abrupt} abrupt, {t.hung_up_close} with a close frame; {t.cut_at_end} closed at the end",
        f"turns: {t.turns_ok} ok, {t.turns_failed} failed ({t.turns_timed_out} timed out)"
        + (f"  [{', '.join(f'{k}: {v}' for k, v in t.failures.items())}]" if t.failures else ""),
        f"client CPU: {_num(report.client_cpu_pct, '.0f')}% of one core",
        f"live sessions {st.grace_s:g} s after the clients left: {_num(report.sessions_after, 'd')}"
        + (
            f" (0 after {report.sessions_zero_after_s:g} s)"
            if report.sessions_zero_after_s is not None
            else ""
        ),
        "",
        f"rule: {report.rule.describe()}",
        f"{'process':<18}{'RSS start':>10}{'end':>8}{'after':>8}{'growth':>8}{'MB/min':>8}{'KB/sess':>8}"
        f"{'CPU %':>7}  verdict",
    ]
    for v in report.verdicts:
        lines.append(
            f"{v.label:<18}{_num(v.rss_start_mb):>10}{_num(v.rss_end_mb):>8}{_num(v.rss_after_mb):>8}"
            f"{_num(v.growth_mb, '+.1f'):>8}{_num(v.slope_mb_per_min, '+.2f'):>8}"
            f"{_num(v.kb_per_session, '+.0f'):>8}{_num(v.cpu_pct, '.0f'):>7}"
            f"  {v.verdict}"
        )
    lines += ["", f"result: {'PASS' if report.passed else 'FAIL'}"]
    return "\n".join(lines)
