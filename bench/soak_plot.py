"""PNG chart of a soak run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt

from bench.soak_report import SoakReport, series


def plot_soak(report: SoakReport, out: Path) -> Path:
    """RSS of each process kind over time (as the change since warm-up), and the live sessions.

    The change rather than the absolute RSS is drawn because the processes differ by more than
    ten times in size (HAProxy ~13 MB, a replica ~140 MB): on one absolute axis a few MB of
    growth would be invisible. The legend gives each one's RSS after warm-up.
    """
    st = report.settings
    fig, (ax, ax_sessions) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    colors = plt.get_cmap("tab10").colors
    verdicts = {v.label: v for v in report.verdicts}
    for i, (label, verdict) in enumerate(verdicts.items()):
        points = series(report.samples, label)
        if not points or verdict.rss_start_mb is None:
            continue
        t, rss = zip(*points, strict=True)
        slope = f", {verdict.slope_mb_per_min:+.2f} MB/min" if verdict.slope_mb_per_min is not None else ""
        ax.plot(
            t,
            [v - verdict.rss_start_mb for v in rss],
            color=colors[i % len(colors)],
            linestyle=("-", "--", ":")[i // len(colors) % 3],
            linewidth=1.8 if verdict.verdict.startswith("SUSPECTED") else 1.0,
            label=f"{label} ({verdict.rss_start_mb:.0f} MB{slope})",
        )
    load_end = next((s.t_s for s in report.samples if s.phase == "drain"), None)
    for a in (ax, ax_sessions):
        a.axvspan(0, st.warmup_s, color="grey", alpha=0.12, linewidth=0)
        if load_end is not None:
            a.axvspan(load_end, report.samples[-1].t_s, color="grey", alpha=0.12, linewidth=0)
        a.grid(alpha=0.3)
    ax.set_ylabel("RSS change since warm-up (MB)")
    ax.set_title(
        f"soak: {st.sessions} sessions, {st.duration_s:g} s, {report.tally.sessions_opened} sessions opened, "
        f"{report.tally.turns_ok} turns ok" + (f" ({Path(st.config).name})" if st.config else ""),
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    live = [(s.t_s, s.sessions_live) for s in report.samples if s.sessions_live is not None]
    if live:
        ax_sessions.step(*zip(*live, strict=True), where="post", color="tab:blue")
    ax_sessions.set_ylabel("live sessions\n(/healthz)")
    ax_sessions.set_xlabel("s since the first session (shaded: warm-up, then drain after the clients left)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
