"""kuberay/monitoring's Prometheus files: the alert rules fire when they should (promtool), the
local config finds Ray, the PodMonitor finds the manifests' pods (the dashboard: test_grafana_dashboard.py).

``promtool`` comes with Debian's ``prometheus`` package, which ``scripts/test.sh`` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serve_app.observability.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "kuberay" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "unit" / "fixtures" / "alerts_test.yml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (scripts/test.sh does)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid_and_fire_as_their_unit_tests_say() -> None:
    checked = promtool("check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", ALERT_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_changed_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    """The rule tests can fail: a voice-latency threshold of 3 s no longer pages at 2.9 s."""
    (tmp_path / "kuberay" / "monitoring").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "fixtures").mkdir(parents=True)
    rules = ALERTS.read_text()
    assert "_bucket[5m]))) > 2\n" in rules
    (tmp_path / "kuberay" / "monitoring" / "alerts.yml").write_text(
        rules.replace("[5m]))) > 2\n", "[5m]))) > 3\n", 1)
    )
    copy = tmp_path / "tests" / "unit" / "fixtures" / "alerts_test.yml"
    copy.write_text(ALERT_TESTS.read_text())
    tested = promtool("test", "rules", copy)
    assert tested.returncode != 0 and "VoxrayVoiceResponseSlow" in tested.stdout + tested.stderr


def test_every_alert_uses_voxray_metrics_that_exist_and_every_rule_is_tested() -> None:
    exported = {spec.exported_name for spec in CATALOGUE}
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    for rule in rules:
        names = set(re.findall(r"\bray_voxray_[a-z_]+", rule["expr"]))
        assert names, rule["alert"]
        for name in names:
            assert re.sub(r"_(bucket|count|sum)$", "", name) in exported, (rule["alert"], name)
        assert rule["labels"]["severity"] in {"page", "ticket"}
    cases = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert firing == {rule["alert"] for rule in rules}  # each alert has a case where it fires


def test_local_prometheus_config_is_valid_and_reads_rays_service_discovery_file() -> None:
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    checked = promtool("check", "config", MONITORING / "prometheus.local.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((MONITORING / "prometheus.local.yml").read_text())
    [files] = [sd["files"] for sd in config["scrape_configs"][0]["file_sd_configs"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


def test_podmonitor_selects_kuberay_pods_on_the_manifests_metrics_port() -> None:
    from tests.unit.kuberay_manifests import VARIANTS, ray_containers

    [monitor] = yaml.safe_load_all((MONITORING / "podmonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    # KubeRay's own pod label (app.kubernetes.io/name: kuberay, set on every Ray pod it makes).
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "kuberay"}}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    for variant in VARIANTS:
        for container in ray_containers(variant):
            assert endpoint["port"] in {p["name"] for p in container["ports"]}


def test_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    for spec in CATALOGUE:
        assert f"| `{spec.exported_name}` | {spec.kind} |" in readme, spec.name
