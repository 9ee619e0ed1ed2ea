"""kuberay/monitoring/grafana-dashboard.json: current, well-formed, and every query names a
metric that voxray or Ray really defines (Ray's names are read from the installed Ray source).

``tests/serve/test_metrics.py`` also checks the names against a live cluster's export.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from serve_app.observability.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "kuberay" / "monitoring" / "dashboard.py"
METRIC_DEFINITION = re.compile(
    r"\b(Gauge|Counter|Histogram)\(\s*(?:name\s*=\s*)?[\"']([a-z_:][a-z0-9_:]*)[\"']"
)


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("voxray_dashboard", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dashboard_module = _load()


def exported_series(kind: str, name: str) -> set[str]:
    """The Prometheus series of one metric as Ray exports it (``ray_`` prefix, kind suffixes)."""
    base = name if name.startswith("ray_") else f"ray_{name}"
    if kind == "Counter":
        return {f"{base}_total"}
    if kind == "Histogram":
        return {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return {base}


@lru_cache(maxsize=1)
def ray_metric_series() -> frozenset[str]:
    """Every series Ray's installed source defines with its metrics classes."""
    import ray

    series: set[str] = set()
    for path in Path(ray.__file__).parent.rglob("*.py"):
        if "/tests/" in str(path):
            continue
        for kind, name in METRIC_DEFINITION.findall(path.read_text(errors="replace")):
            series |= exported_series(kind, name)
    return frozenset(series)


def voxray_series() -> set[str]:
    series: set[str] = set()
    for spec in CATALOGUE:
        kind = {"counter": "Counter", "histogram": "Histogram", "gauge": "Gauge"}[spec.kind]
        series |= exported_series(kind, spec.name)
    return series


def unknown_metrics(queries: list[str]) -> set[str]:
    known = voxray_series() | ray_metric_series()
    return {name for query in queries for name in dashboard_module.metric_names(query)} - known


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def test_the_committed_json_is_what_the_script_writes() -> None:
    committed = json.loads((ROOT / "kuberay" / "monitoring" / "grafana-dashboard.json").read_text())
    assert committed == dashboard_module.build_dashboard()
    check = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_panels_are_well_formed() -> None:
    dashboard = dashboard_module.build_dashboard()
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["refId"]


def test_every_query_names_a_metric_voxray_or_ray_exports() -> None:
    queries = dashboard_module.dashboard_queries(dashboard_module.build_dashboard())
    assert not unknown_metrics(queries)
    used = {name for query in queries for name in dashboard_module.metric_names(query)}
    for spec in CATALOGUE:  # every voxray metric is on the dashboard
        assert any(name.startswith(spec.exported_name) for name in used), spec.name
    assert any(name.startswith("ray_node_") for name in used)
    assert any(name.startswith("ray_serve_") for name in used)


def test_the_check_catches_a_made_up_metric() -> None:
    bad = "histogram_quantile(0.95, sum by (le) (rate(ray_voxray_made_up_seconds_bucket[5m])))"
    assert unknown_metrics([bad]) == {"ray_voxray_made_up_seconds_bucket"}
    assert unknown_metrics(["ray_node_cpu_utilisation"]) == {"ray_node_cpu_utilisation"}  # British spelling


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.95, sum by (le) (rate(ray_x_bucket{a="b"}[5m])))', {"ray_x_bucket"}),
        ("sum(rate(a_total[1m])) / clamp_min(sum(rate(b_total[1m])), 1e-9)", {"a_total", "b_total"}),
        ('sum by (deployment, code) (rate(c_total{code=~"x|y"}[$__rate_interval]))', {"c_total"}),
        ("ray_node_mem_used / ray_node_mem_total", {"ray_node_mem_used", "ray_node_mem_total"}),
        ('count(up{job="ray"} == 1) or vector(0)', {"up"}),
    ],
)
def test_metric_names_finds_only_series_selectors(expr: str, names: set[str]) -> None:
    assert dashboard_module.metric_names(expr) == names
