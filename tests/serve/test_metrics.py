"""voxray's metrics, scraped by a real Prometheus from a real Ray cluster; /readyz; turn logs.

The fake-model app of ``test_realtime_ws`` (scripted model cost, real Serve, real VAD) takes
a spoken turn, a barge-in, a bad event and a refused connection; Prometheus (Debian's
package, on loopback) scrapes the cluster's metrics port every second, and the test asks it
over the HTTP API, in PromQL, for the series an operator's dashboard and alerts use.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from serve_app.observability.metrics import CATALOGUE
from tests.conftest import deployed_app
from tests.realtime_client import RealtimeTestClient
from tests.serve.prometheus_server import Prometheus, prometheus_scraping
from tests.serve.test_realtime_ws import FAKE_APP_ARGS

APP = "metricsapp"


def stage(deployment: str, **labels: str) -> str:
    """The label matcher of one fake model stage (the app's backends are all ``fake``)."""
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return f'{{deployment="{deployment}",backend="fake",model="-"{extra}}}'


ROOT = Path(__file__).resolve().parents[2]
GPU_ONLY = ("ray_node_gpus_", "ray_node_gram_")  # Ray exports these only on nodes with GPUs


@pytest.fixture(scope="module")
def app_url(serve_instance: str) -> Iterator[str]:
    args = {**FAKE_APP_ARGS, "limits": {"max_sessions_per_replica": 1}}
    with deployed_app(APP, args) as prefix:
        yield f"{serve_instance}{prefix}"


@pytest.fixture(scope="module")
def prometheus(ray_metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with prometheus_scraping(
        f"127.0.0.1:{ray_metrics_port}", tmp_path_factory.mktemp("prometheus")
    ) as server:
        yield server


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def talk_and_barge_in(url: str, make_utterance: Any) -> dict[str, Any]:
    """One completed spoken turn, one barged-in turn, one bad event, one refused connection."""
    async with RealtimeTestClient(f"{url}/v1/realtime") as client:
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
        )
        await client.send({"type": "no.such.event"})
        await client.wait_for("error")
        # A second connection while this one is open: over max_sessions_per_replica.
        async with websockets.connect(f"{url}/v1/realtime") as refused:
            first = json.loads(await refused.recv())
            assert first["error"]["code"] == "session_limit_reached", first
        await client.stream_audio(
            make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8),
            realtime=False,
        )
        await client.wait_for("response.output_audio.delta", count=2, timeout=30)
        await client.stream_audio(make_utterance("Wait, stop.", lead_silence_s=0.1, trail_silence_s=0.0))
        cancelled = await client.wait_for("response.done", timeout=30)
        assert cancelled["response"]["status"] == "cancelled", cancelled
        await client.stream_audio(bytes(2 * 24_000), realtime=False)  # the end of "Wait, stop."
        # The fake LLM's reply is long: cancel the second response once it speaks.
        await client.wait_for(
            "response.output_audio.delta", count=len(client.of("response.output_audio.delta")) + 1
        )
        await client.send({"type": "response.cancel"})
        await client.wait_for("response.done", count=2, timeout=30)
        # A short text reply that runs to its end: the LLM's stream rate is measured then.
        await client.send({"type": "response.create", "response": {"max_output_tokens": 6}})
        completed = await client.wait_for("response.done", count=3, timeout=30)
        assert completed["response"]["status"] == "completed", completed
        return cancelled


async def test_prometheus_scrapes_voxray_series_after_a_spoken_turn(
    app_url: str, prometheus: Prometheus, make_utterance: Any
) -> None:
    await talk_and_barge_in(app_url, make_utterance)
    p = prometheus
    assert p.wait_for('sum(ray_voxray_turns_total{outcome="cancelled"})', lambda v: v is not None and v >= 2)
    assert p.wait_for('sum(ray_voxray_responses_cancelled_total{reason="turn_detected"})') >= 1
    assert p.wait_for('sum(ray_voxray_responses_cancelled_total{reason="client_cancelled"})') >= 1
    assert p.wait_for("sum(ray_voxray_voice_response_latency_seconds_count)") >= 1
    assert p.wait_for("sum(ray_voxray_endpointing_wait_seconds_count)") >= 2
    assert p.wait_for("sum(ray_voxray_barge_in_stop_latency_seconds_count)") >= 1
    assert p.wait_for(f"sum(ray_voxray_asr_latency_seconds_count{stage('ASR', outcome='ok')})") >= 2
    assert p.wait_for(f"sum(ray_voxray_llm_time_to_first_token_seconds_count{stage('LLM')})") >= 2
    assert p.wait_for(f"sum(ray_voxray_tts_time_to_first_chunk_seconds_count{stage('TTS')})") >= 1
    assert p.wait_for(f"sum(ray_voxray_tts_real_time_factor_count{stage('TTS')})") >= 1
    assert p.wait_for(f"sum(ray_voxray_llm_tokens_per_second_count{stage('LLM')})") >= 1
    assert p.wait_for('sum(ray_voxray_turns_total{outcome="completed"})') >= 1
    assert (
        p.wait_for('sum(ray_voxray_errors_total{type="invalid_request_error",code="unknown_event_type"})')
        >= 1
    )
    assert p.wait_for('sum(ray_voxray_connections_rejected_total{reason="session_limit_reached"})') >= 1
    assert p.wait_for("sum(ray_voxray_sessions_opened_total)") >= 1
    # The session closed: every Ingress replica's gauge is back to 0.
    p.wait_for("max(ray_voxray_sessions_active)", lambda v: v == 0)
    # Percentiles the dashboard draws come out of the buckets (Ray exports them per worker).
    median = p.value("histogram_quantile(0.5, sum by (le) (ray_voxray_tts_real_time_factor_bucket))")
    assert median is not None and 0 < median < 2, median
    # No session id ever becomes a label.
    for series in p.query('{__name__=~"ray_voxray_.*"}'):
        assert not any("sess_" in value for value in series["metric"].values()), series["metric"]
    assert p.targets_up()


def load_dashboard_module() -> Any:
    """``kuberay/monitoring/dashboard.py`` (a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "voxray_dashboard", ROOT / "kuberay/monitoring/dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dashboard_metric_is_exported_by_the_running_cluster(prometheus: Prometheus) -> None:
    """The dashboard's queries name series this cluster really exports (GPU series excepted)."""
    dashboard = load_dashboard_module()
    voxray = {spec.exported_name for spec in CATALOGUE}
    prometheus.wait_for("count(ray_voxray_turns_total)")  # the other test ran first
    names = set()
    for query in dashboard.dashboard_queries(dashboard.build_dashboard()):
        names |= dashboard.metric_names(query)
    wanted = {n for n in names if not n.startswith(GPU_ONLY)}
    scraped = prometheus.names()
    missing = sorted(n for n in wanted if n not in scraped)
    assert not missing, f"the dashboard names series nobody exports here: {missing}"
    assert any(n.removesuffix("_bucket") in voxray for n in names)


def test_readyz_reports_every_model_and_healthz_stays_cheap(app_url: str) -> None:
    http = app_url.replace("ws://", "http://", 1)
    status, body = http_get(f"{http}/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["models"]) == {"asr", "llm", "tts"}
    assert all(model["ok"] for model in body["models"].values()), body
    with urllib.request.urlopen(f"{http}/readyz", timeout=60) as response:
        assert b'"status":"ready"' in response.read()  # what the KubeRay readiness probe greps
    status, health = http_get(f"{http}/healthz")
    assert status == 200 and health["status"] == "ok" and health["draining"] is False


def test_each_turn_logs_one_structured_line(app_url: str, make_utterance: Any) -> None:
    import ray

    async def one_turn() -> tuple[str, str]:
        async with RealtimeTestClient(f"{app_url}/v1/realtime") as client:
            created = await client.wait_for("session.created")
            await client.stream_audio(
                make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8),
                realtime=False,
            )
            await client.wait_for("response.output_audio.delta")
            await client.send({"type": "response.cancel"})
            done = await client.wait_for("response.done")
            return created["session"]["id"], done["response"]["id"]

    session_id, response_id = asyncio.run(one_turn())
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    lines: list[str] = []
    for _ in range(50):
        lines = [
            line
            for path in logs.glob(f"replica_{APP}_Ingress_*.log")
            for line in path.read_text(errors="replace").splitlines()
            if response_id in line
        ]
        if lines:
            break
        asyncio.run(asyncio.sleep(0.2))
    turn_lines = [line for line in lines if " turn {" in line]
    assert len(turn_lines) == 1, lines
    fields = json.loads(turn_lines[0].split(" turn ", 1)[1])
    assert fields["session_id"] == session_id and fields["turn_id"] == response_id
    assert fields["outcome"] == "cancelled" and fields["reason"] == "client_cancelled"
    assert {"endpointing_ms", "asr_ms", "llm_first_token_ms", "first_audio_ms"} <= set(fields["timings_ms"])
    assert "France" not in turn_lines[0]  # what the user said is logged at DEBUG only
