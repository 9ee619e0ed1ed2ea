"""Write voxray's Grafana dashboard from Python, so its queries stay checkable.

    python kuberay/monitoring/dashboard.py          # (re)write grafana-dashboard.json
    python kuberay/monitoring/dashboard.py --check  # exit 1 with a diff if the file differs

Import ``grafana-dashboard.json`` in Grafana (Dashboards → New → Import) and pick the
Prometheus data source that scrapes Ray's metrics port. voxray's series are defined in
``serve_app/metrics.py``; the Ray and Serve series used here were read off a live Ray 2.60
cluster's metrics port (``ray_node_cpu_utilization``, ``ray_node_mem_used``,
``ray_node_mem_total``, ``ray_serve_deployment_processing_latency_ms_bucket``,
``ray_serve_deployment_request_counter_total``, ``ray_serve_deployment_queued_queries``,
``ray_serve_replica_processing_queries``) except the GPU ones, which Ray's reporter agent
exports only on nodes with GPUs (``ray_node_gpus_utilization``, ``ray_node_gram_used``,
``ray_node_gram_available``: see ``ray/dashboard/modules/reporter/reporter_agent.py``).
``tests/unit/test_grafana_dashboard.py`` and ``tests/serve/test_metrics.py`` check them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD_PATH = HERE / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH, HEIGHT, PER_ROW = 8, 8, 3
WINDOW = "$__rate_interval"

PROMQL_WORDS = {
    # functions and aggregations the dashboard uses, and PromQL's keywords
    "rate", "irate", "increase", "sum", "avg", "max", "min", "count", "histogram_quantile",
    "clamp_min", "clamp_max", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "topk", "bottomk", "abs", "vector", "scalar",
}  # fmt: skip


def quantiles(
    metric: str, by: str = "", selector: str = "", qs: tuple[float, ...] = (0.5, 0.95)
) -> list[dict[str, Any]]:
    """Targets drawing percentiles of a histogram, optionally per label set.

    Args:
        metric: The histogram's name without ``_bucket``.
        by: Extra grouping labels, e.g. ``"backend, model"``.
        selector: A label matcher body, e.g. ``outcome="ok"``.
        qs: The quantiles.

    Returns:
        One target per quantile.
    """
    group = f"le, {by}" if by else "le"
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    return [
        target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{WINDOW}])))",
            f"p{round(q * 100)} {legend}".strip(),
        )
        for q in qs
    ]


def rate_by(counter: str, labels: str) -> list[dict[str, Any]]:
    """One target: a counter's per-second rate, summed per ``labels`` (comma-separated)."""
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in labels.split(","))
    return [target(f"sum by ({labels}) (rate({counter}[{WINDOW}]))", legend)]


def target(expr: str, legend: str) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ""}


class Layout:
    """Places rows and panels on Grafana's 24-column grid, top to bottom, without overlaps."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._y = 0
        self._column = 0

    def row(self, title: str) -> None:
        """Start a new row of panels under a heading."""
        self._newline()
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self._newline()

    def panel(self, title: str, unit: str, targets: list[dict[str, Any]], description: str = "") -> None:
        """A time series panel in the next free slot."""
        if self._column == PER_ROW:
            self._newline()
        for index, each in enumerate(targets):
            each["refId"] = chr(ord("A") + index)
        panel = {
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        }
        self._add(panel, WIDTH, HEIGHT, x=self._column * WIDTH)
        self._column += 1

    def _add(self, panel: dict[str, Any], w: int, h: int, x: int = 0) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": self._y}
        self.panels.append(panel)

    def _newline(self) -> None:
        if self.panels:
            last = self.panels[-1]["gridPos"]
            self._y = last["y"] + last["h"]
        self._column = 0


def build_dashboard() -> dict[str, Any]:
    """The whole dashboard as Grafana's JSON model."""
    stage = "backend, model"
    grid = Layout()
    grid.row("Latency per stage")
    grid.panel(
        "Voice response latency",
        "s",
        quantiles("ray_voxray_voice_response_latency_seconds"),
        "End of the user's speech to the first reply audio sent.",
    )
    grid.panel("Endpointing wait", "s", quantiles("ray_voxray_endpointing_wait_seconds"))
    grid.panel("ASR latency", "s", quantiles("ray_voxray_asr_latency_seconds", stage, 'outcome="ok"'))
    grid.panel("LLM time to first token", "s", quantiles("ray_voxray_llm_time_to_first_token_seconds", stage))
    grid.panel(
        "LLM tokens per second",
        "short",
        quantiles("ray_voxray_llm_tokens_per_second", stage, qs=(0.5, 0.05)),
        "Median and slowest 5% of streams.",
    )
    grid.panel("TTS time to first chunk", "s", quantiles("ray_voxray_tts_time_to_first_chunk_seconds", stage))
    grid.panel(
        "TTS real-time factor",
        "short",
        quantiles("ray_voxray_tts_real_time_factor", stage),
        "Seconds of waiting per second of speech; above 1 the reply stutters.",
    )
    grid.panel("Barge-in stop latency", "s", quantiles("ray_voxray_barge_in_stop_latency_seconds"))

    grid.row("Sessions and turns")
    grid.panel(
        "Active sessions",
        "short",
        [
            target("sum(ray_voxray_sessions_active)", "all"),
            target("sum by (replica) (ray_voxray_sessions_active)", "{{replica}}"),
            target("sum by (protocol) (ray_voxray_sessions_active)", "{{protocol}}"),
        ],
    )
    grid.panel(
        "Sessions opened", "ops", [target(f"sum(rate(ray_voxray_sessions_opened_total[{WINDOW}]))", "opened")]
    )
    grid.panel("Turns by outcome", "ops", rate_by("ray_voxray_turns_total", "outcome"))
    grid.panel(
        "Cancelled responses by reason", "ops", rate_by("ray_voxray_responses_cancelled_total", "reason")
    )

    grid.row("Errors")
    grid.panel("Error events by type and code", "ops", rate_by("ray_voxray_errors_total", "type, code"))
    grid.panel(
        "Refused connections by reason", "ops", rate_by("ray_voxray_connections_rejected_total", "reason")
    )
    grid.panel(
        "Failed transcriptions",
        "percentunit",
        [
            target(
                f'sum(rate(ray_voxray_asr_latency_seconds_count{{outcome="error"}}[{WINDOW}]))'
                f" / clamp_min(sum(rate(ray_voxray_asr_latency_seconds_count[{WINDOW}])), 1e-9)",
                "share failed",
            )
        ],
    )

    grid.row("Cluster (Ray)")
    grid.panel("Node CPU", "percent", [target("ray_node_cpu_utilization", "{{NodeAddress}}")])
    grid.panel(
        "Node memory used",
        "percentunit",
        [target("ray_node_mem_used / ray_node_mem_total", "{{NodeAddress}}")],
    )
    grid.panel(
        "GPU utilisation",
        "percent",
        [target("ray_node_gpus_utilization", "{{NodeAddress}} GPU {{GpuIndex}}")],
        "Only nodes with GPUs export this.",
    )
    grid.panel(
        "GPU memory used",
        "percentunit",
        [
            target(
                "ray_node_gram_used / (ray_node_gram_used + ray_node_gram_available)",
                "{{NodeAddress}} GPU {{GpuIndex}}",
            )
        ],
        "Only nodes with GPUs export this.",
    )
    grid.panel(
        "Serve requests per deployment",
        "reqps",
        rate_by("ray_serve_deployment_request_counter_total", "deployment"),
    )
    grid.panel(
        "Serve processing latency p95",
        "ms",
        quantiles("ray_serve_deployment_processing_latency_ms", "deployment", qs=(0.95,)),
        "Per call inside the replica; streaming calls last as long as their stream.",
    )
    grid.panel(
        "Serve queued and in-flight calls",
        "short",
        [
            target("sum by (deployment) (ray_serve_deployment_queued_queries)", "queued {{deployment}}"),
            target("sum by (deployment) (ray_serve_replica_processing_queries)", "running {{deployment}}"),
        ],
    )
    return {
        "uid": "voxray",
        "title": "voxray",
        "tags": ["voxray", "ray"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": grid.panels,
    }


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard, rows' nested panels included."""
    queries: list[str] = []
    for panel in dashboard.get("panels", []):
        queries += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        queries += dashboard_queries({"panels": panel.get("panels", [])})
    return queries


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or numbers)."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        following = text[match.end() :].lstrip()
        if name in PROMQL_WORDS or following.startswith("("):
            continue  # a function call or a keyword
        if re.fullmatch(r"e\d*|inf|nan|Inf|NaN", name):
            continue  # part of a number such as 1e-9
        names.add(name)
    return names


def render() -> str:
    """The dashboard file's text."""
    return json.dumps(build_dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard, or with ``--check`` report whether the file is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.read_text() if DASHBOARD_PATH.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(True), text.splitlines(True), "committed", "rendered", n=2
        )
        sys.stdout.writelines(diff)
        print(
            f"\n{DASHBOARD_PATH.name} is stale: run python kuberay/monitoring/dashboard.py", file=sys.stderr
        )
        return 1
    DASHBOARD_PATH.write_text(text)
    print(f"wrote {DASHBOARD_PATH.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
