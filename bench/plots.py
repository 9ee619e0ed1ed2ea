"""PNG charts of load benchmark reports (matplotlib, Agg backend: no display needed).

* :func:`plot_histogram`: the distribution of the voice response latency of one run.
* :func:`plot_breakdown`: one stacked bar of the median stages of the first reply audio.
* :func:`plot_latency_vs_sessions`: p50 / p95 latency (and overhead) against concurrent sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt

from bench.load_report import BARGE_IN, LATENCY, OVERHEAD, STAGES, LoadReport, minus_silence, segments, stat


def _title(report: LoadReport) -> str:
    c, s = report.config, report.summary
    config = f", {Path(c.config).name}" if c.config else ""
    return f"{c.sessions} session(s) x {c.turns} turn(s){config}: {s.turns_ok} ok, {s.turns_failed} failed"


def plot_histogram(report: LoadReport, out: Path) -> Path | None:
    """Histogram of the voice response latency (and of the overhead, for fake configs).

    Returns:
        The file written, or ``None`` when no turn was measured.
    """
    ok = [r for r in report.turns if r.ok and r.voice_latency_ms is not None]
    if not ok:
        return None
    series = {LATENCY: [r.voice_latency_ms for r in ok]}
    series["minus endpointing silence"] = [v for r in ok if (v := minus_silence(r)) is not None]
    if report.config.profile is not None:
        series[OVERHEAD] = [r.overhead_ms for r in ok if r.overhead_ms is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in series.items():
        if not values:
            continue
        st = stat(values)
        ax.hist(
            values, bins=min(40, max(5, len(values) // 2)), alpha=0.6, label=f"{label} (p50 {st.p50:.0f})"
        )
        ax.axvline(st.p95 or 0, linestyle=":", color="grey")
    ax.set_xlabel("ms after the last voiced frame was sent (dotted: p95)")
    ax.set_ylabel("turns")
    ax.set_title(_title(report), fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_breakdown(report: LoadReport, out: Path) -> Path | None:
    """One horizontal stacked bar: where the time to the first reply audio goes (medians).

    Each segment ends at the median instant of a stage (``LoadReport.summary.timeline_p50``) and
    is named after it, so the bar ends at the median voice response latency.

    Returns:
        The file written, or ``None`` when no turn reported the server's stage timings.
    """
    timeline = report.summary.timeline_p50
    if not timeline:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    colors = plt.get_cmap("tab10").colors
    left = 0.0
    for name, width in segments(timeline).items():
        color = colors[STAGES.index(name) % len(colors)]
        ax.barh([0], [width], left=left, color=color, label=f"{name}: {width:.0f} ms")
        left += width
    ax.set_yticks([])
    ax.set_xlabel("ms after the last voiced frame was sent (medians)")
    ax.set_title(_title(report), fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    return _save(fig, out)


def plot_latency_vs_sessions(reports: Sequence[LoadReport], out: Path) -> Path:
    """p50 and p95 of voice latency, overhead and barge-in latency against concurrent sessions."""
    ordered = sorted(reports, key=lambda r: r.config.sessions)
    x = [r.config.sessions for r in ordered]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for figure, color in ((LATENCY, "tab:blue"), (OVERHEAD, "tab:orange"), (BARGE_IN, "tab:green")):
        stats = [r.summary.figures.get(figure) for r in ordered]
        if not any(st is not None and st.n for st in stats):
            continue
        for pct, style in (("p50", "-o"), ("p95", "--^")):
            y = [getattr(st, pct) if st is not None else None for st in stats]
            points = [(a, b) for a, b in zip(x, y, strict=True) if b is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, color=color, label=f"{figure} {pct}")
    ax.set_xscale("log" if len(x) > 1 and max(x) / min(x) >= 10 else "linear")
    ax.set_xticks(x, [str(n) for n in x])
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("ms")
    configs = sorted({Path(r.config.config).name for r in ordered if r.config.config})
    ax.set_title("latency vs sessions" + (f" ({', '.join(configs)})" if configs else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
