"""The load benchmark (bench.load): its arithmetic on synthetic records, and one short real run.

The real run talks to the real ``Session`` (real Silero VAD, scripted fake models) behind a
bare ``websockets`` server: a test harness standing in for the Ingress, without Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.load import render_summary, run_load
from bench.load_client import Utterance
from bench.load_report import (
    LATENCY,
    OVERHEAD,
    STAGES,
    STARVED,
    FakeProfile,
    LoadReport,
    LoadSettings,
    TurnRecord,
    overhead,
    playback_starvation,
    segments,
    stage_timeline,
    stat,
    summarize,
)
from bench.plots import plot_breakdown, plot_histogram, plot_latency_vs_sessions
from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.client.talk import FRAME_BYTES
from serve_app.config import AppConfig
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.realtime.adapter import RealtimeSession

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SERVER = {"asr_ms": 50.0, "llm_first_token_ms": 160.0, "first_phrase_ms": 175.0, "tts_first_chunk_ms": 250.0}
PROFILE = FakeProfile(
    asr_delay_ms=50, llm_first_token_ms=100, llm_first_phrase_ms=12.5, tts_first_chunk_ms=70
)


def settings(**overrides: Any) -> LoadSettings:
    fields: dict[str, Any] = dict(
        url="ws://x", sessions=2, turns=2, questions=["q"], interruption="stop", pause_s=0.2, ramp_s=0.0,
        barge_in_every=0, barge_in_after_s=0.4, turn_timeout_s=20.0, jitter_buffer_ms=100.0,
    )  # fmt: skip
    return LoadSettings(**(fields | overrides))


def record(**fields: Any) -> TurnRecord:
    return TurnRecord(session=0, turn=0, question="q", ok=True, silence_duration_ms=500, **fields)


# --- arithmetic on synthetic records ---------------------------------------------------------


def test_playback_keeps_up_when_audio_arrives_in_real_time_or_faster() -> None:
    steady = [(i * 0.1, 0.1) for i in range(20)]  # 100 ms of audio every 100 ms
    burst = [(0.0, 0.5), (0.01, 0.5), (0.02, 0.5)]
    for deltas in (steady, burst):
        c = playback_starvation(deltas, jitter_buffer_s=0.1)
        assert (c.gaps, c.starved_ms, c.max_gap_ms) == (0, 0.0, 0.0)
    assert playback_starvation(steady).audio_ms == pytest.approx(2000.0)
    assert playback_starvation(steady).playback_end == pytest.approx(0.1 + 2.0)
    assert playback_starvation([]).gaps == 0


def test_playback_starves_when_audio_comes_late() -> None:
    # Player starts at 0.1 s and needs more at 0.2 s; it arrives at 0.5 s: 300 ms gap.
    # Then it needs more at 0.6 s; arrives at 0.65 s: 50 ms gap.
    c = playback_starvation([(0.0, 0.1), (0.5, 0.1), (0.65, 0.2)], jitter_buffer_s=0.1)
    assert c.gaps == 2
    assert c.starved_ms == pytest.approx(350.0)
    assert c.max_gap_ms == pytest.approx(300.0)
    assert c.playback_end == pytest.approx(0.85)
    # A bigger jitter buffer absorbs the same arrivals.
    assert playback_starvation([(0.0, 0.1), (0.5, 0.1), (0.65, 0.2)], jitter_buffer_s=0.5).gaps == 0


def test_stat_percentiles_and_missing_values() -> None:
    s = stat([*range(1, 101), None])
    assert (s.n, s.p50, s.p95, s.max) == (100, 50.5, 95.0, 100.0)
    assert stat([None]).n == 0 and stat([]).p50 is None


def test_overhead_subtracts_endpointing_silence_and_scripted_model_time() -> None:
    assert PROFILE.model_ms == pytest.approx(232.5)
    assert overhead(record(voice_latency_ms=800.0), PROFILE) == pytest.approx(800 - 500 - 232.5)
    assert overhead(record(voice_latency_ms=800.0), None) is None  # not a fake config
    assert overhead(record(), PROFILE) is None  # no audio


def test_fake_profile_reads_the_shipped_configs() -> None:
    gpu = FakeProfile.from_serve_config(CONFIGS / "fake-gpu.yaml")
    assert gpu is not None
    assert (gpu.asr_delay_ms, gpu.llm_first_token_ms, gpu.tts_first_chunk_ms) == (50, 100, 70)
    # "Sure." is the first phrase; it is complete when the next word arrives, 1/80 s later.
    assert gpu.llm_first_phrase_ms == pytest.approx(12.5)
    assert FakeProfile.from_serve_config(CONFIGS / "fake-zero.yaml").model_ms == 0  # type: ignore[union-attr]
    assert FakeProfile.from_serve_config(CONFIGS / "local.yaml") is None


def test_first_phrase_time_follows_the_phrase_splitter() -> None:
    args = {
        "asr": {"backend": "fake", "options": {"transcripts": ["a b c"]}},
        "llm": {"backend": "fake", "options": {"reply": "You said: {user}. Fine.", "tokens_per_s": 10}},
        "tts": {"backend": "fake"},
    }
    # Tokens: "You" "said:" "a" ...: the phrase "You said:" ends when "a" (token 2) arrives.
    assert FakeProfile.from_app_args(args).llm_first_phrase_ms == pytest.approx(200.0)  # type: ignore[union-attr]
    args["llm"]["options"]["reply"] = "no phrase end at all"  # flushed after the 5th word
    assert FakeProfile.from_app_args(args).llm_first_phrase_ms == pytest.approx(400.0)  # type: ignore[union-attr]


def test_timeline_without_speculation_puts_the_stages_after_the_end_of_turn() -> None:
    # The server's reference is the end of turn, which the client saw 540 ms after t0.
    timeline = stage_timeline(record(voice_latency_ms=820.0, speech_stopped_ms=540.0, server_ms=SERVER))
    assert timeline == dict(zip(STAGES[1:], [540.0, 590.0, 700.0, 715.0, 790.0, 820.0], strict=True))
    assert list(segments(timeline).values()) == [540.0, 50.0, 110.0, 15.0, 75.0, 30.0]
    assert sum(segments(timeline).values()) == 820.0
    assert stage_timeline(record(voice_latency_ms=820.0, server_ms={"asr_ms": 1.0})) is None


def test_timeline_with_speculation_shows_the_work_done_before_the_end_of_turn() -> None:
    # The server counts from its VAD's end of speech, which it placed 530 ms before the end of
    # turn; the client saw the end of turn at 600 ms, so speech ended (for the server) at 70 ms.
    # The reply was ready 300 ms after that and waited for the end of turn. asr_ms (a duration
    # from an unreported start) is left out.
    server = {
        "asr_ms": 20.0,
        "llm_first_token_ms": 280.0,
        "first_phrase_ms": 290.0,
        "tts_first_chunk_ms": 300.0,
    }
    r = record(voice_latency_ms=610.0, speech_stopped_ms=600.0, server_ms=server | {"endpointing_ms": 530.0})
    timeline = stage_timeline(r)
    assert timeline is not None
    assert segments(timeline) == {
        STAGES[0]: 70.0, STAGES[3]: 280.0, STAGES[4]: 10.0, STAGES[5]: 10.0, STAGES[1]: 230.0, STAGES[6]: 10.0
    }  # fmt: skip
    assert sum(segments(timeline).values()) == 610.0


def test_summary_counts_failures_barge_ins_and_gaps() -> None:
    records = [
        record(voice_latency_ms=800.0, speech_stopped_ms=540.0, server_ms=SERVER, overhead_ms=67.5),
        record(
            voice_latency_ms=900.0,
            barge_in=True,
            barge_in_status="cancelled",
            barge_in_latency_ms=120.0,
            continuity=playback_starvation([(0.0, 0.1), (0.5, 0.1)]),
        ),
        record(barge_in=True, barge_in_status="completed"),
        TurnRecord(session=1, turn=0, question="q", error="timeout: no finished reply within 20 s"),
        TurnRecord(session=1, turn=1, question="q", error="connection closed: 1006"),
    ]
    s = summarize(records, settings(profile=PROFILE), sessions_connected=2, wall_s=10.0, client_cpu_s=2.5)
    assert (s.turns_total, s.turns_ok, s.turns_failed) == (5, 3, 2)
    assert s.failures == {"timeout": 1, "connection closed": 1}
    assert (s.barge_ins, s.barge_ins_cancelled, s.turns_with_gaps) == (2, 1, 1)
    assert s.figures[LATENCY].n == 2 and s.figures[LATENCY].p50 == 850.0
    assert s.figures[STARVED].max == pytest.approx(300.0)
    assert s.client_cpu_pct == 25.0
    assert s.timeline_p50[STAGES[2]] == 590.0 and s.server["asr_ms"].n == 1
    report = LoadReport(
        created_at="now", host="h", config=settings(profile=PROFILE), turns=records, summary=s
    )
    text = render_summary(report)
    assert OVERHEAD in text and "1 of 2 interrupted replies cancelled" in text and "timeout: 1" in text
    no_profile = report.model_copy(update={"config": settings()})
    assert OVERHEAD not in render_summary(no_profile)


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    reports = []
    for n in (1, 10):
        records = [
            record(
                voice_latency_ms=700.0 + i * n, speech_stopped_ms=540.0, server_ms=SERVER, overhead_ms=i * 1.0
            )
            for i in range(8)
        ]
        cfg = settings(sessions=n, profile=PROFILE, config="configs/fake-gpu.yaml")
        summary = summarize(records, cfg, sessions_connected=n, wall_s=5.0, client_cpu_s=1.0)
        reports.append(LoadReport(created_at="now", host="h", config=cfg, turns=records, summary=summary))
    paths = [
        plot_histogram(reports[1], tmp_path / "hist.png"),
        plot_breakdown(reports[1], tmp_path / "stages.png"),
        plot_latency_vs_sessions(reports, tmp_path / "sweep.png"),
    ]
    for path in paths:
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = reports[0].model_copy(update={"turns": []})
    assert plot_histogram(empty, tmp_path / "none.png") is None


def test_utterance_finds_its_voiced_frames() -> None:
    tone = (0.3 * 32767 * np.sin(np.arange(FRAME_BYTES // 2 * 3) / 5)).astype("<i2").tobytes()
    pcm = bytes(FRAME_BYTES * 2) + tone + bytes(FRAME_BYTES * 4)  # frames 2..4 are voiced
    u = Utterance.from_pcm("x", pcm)
    assert (u.first_voiced, u.last_voiced, len(u.messages)) == (2, 4, 9)
    assert json.loads(u.messages[0])["type"] == "input_audio_buffer.append"
    with pytest.raises(ValueError, match="louder"):
        Utterance.from_pcm("silence", bytes(FRAME_BYTES * 3))


# --- one short real run -------------------------------------------------------------------


class SessionTestServer:
    """Test harness: the real ``Session`` behind a bare ``websockets`` server, standing in for the
    Ingress (which needs Ray). One Session per connection; models are shared fakes."""

    def __init__(self, vad: SileroVAD, args: dict[str, Any]) -> None:
        self.vad = vad
        self.config = AppConfig.model_validate(args)
        self.models = ModelClients(
            FakeASR(None, args["asr"]["options"]),
            FakeLLM(None, args["llm"]["options"]),
            FakeTTS(None, args["tts"]["options"]),
        )

    async def handle(self, ws: ServerConnection) -> None:
        outbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def write() -> None:
            while True:
                await ws.send(json.dumps(await outbound.get()))

        session = RealtimeSession(self.config, self.models, self.vad.stream(), outbound.put)
        writer = asyncio.create_task(write())
        try:
            await session.start()
            async for message in ws:
                await session.handle_message(message)
        except ConnectionClosed:
            pass
        finally:
            await session.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer


@pytest.fixture
async def server_url(silero_model_path: Path) -> AsyncIterator[tuple[str, FakeProfile]]:
    args: dict[str, Any] = {
        "asr": {"backend": "fake", "options": {"delay_ms": 20, "transcripts": ["Hello there."]}},
        "llm": {
            "backend": "fake",
            "options": {
                "reply": "Sure. " + " ".join(f"This is sentence number {i} of the reply." for i in range(5)),
                "first_token_ms": 30,
                "tokens_per_s": 200,
            },
        },
        "tts": {
            "backend": "fake",
            "options": {"first_chunk_ms": 20, "realtime_factor": 0.2, "ms_per_char": 10},
        },
        "session": {"max_audio_lead_ms": 300},
    }
    harness = SessionTestServer(SileroVAD(silero_model_path), args)
    async with serve(harness.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        profile = FakeProfile.from_app_args(args)
        assert profile is not None
        yield f"ws://127.0.0.1:{port}/v1/realtime", profile


async def test_load_client_runs_sessions_against_a_real_session(
    server_url: tuple[str, FakeProfile], make_utterance: Any
) -> None:
    url, profile = server_url
    question = Utterance.from_pcm("Hello there.", make_utterance("Hello there.", 24000, 0.1, 0.0))
    interruption = Utterance.from_pcm("Stop, please.", make_utterance("Stop, please.", 24000, 0.0, 0.0))
    cfg = settings(url=url, barge_in_every=2, ramp_s=0.2, profile=profile)
    report = await asyncio.wait_for(run_load(cfg, [question], interruption, progress=False), 30)

    s = report.summary
    assert (s.turns_total, s.turns_ok, s.sessions_connected) == (4, 4, 2), [t.error for t in report.turns]
    assert s.silence_duration_ms == 500
    for t in report.turns:
        assert t.voice_latency_ms is not None and t.voice_latency_ms > 0
        assert t.transcript_ms is not None and t.response_done_ms is not None
        assert t.overhead_ms == pytest.approx(t.voice_latency_ms - 500 - profile.model_ms, abs=0.15)
        # The VAD ends the turn at least the silence after the last voiced frame, in audio time,
        # and within a few 32 ms windows of it (Silero's probability decays after speech fades).
        assert t.endpoint_audio_ms is not None and 500 <= t.endpoint_audio_ms <= 500 + 8 * 32
        assert {"asr_ms", "llm_first_token_ms", "tts_first_chunk_ms"} <= set(t.server_ms)
        assert t.continuity.audio_ms > 0
    plain = [t for t in report.turns if not t.barge_in]
    barged = [t for t in report.turns if t.barge_in]
    assert [t.turn for t in barged] == [1, 1]  # every 2nd turn of each session
    assert all(t.response_status == "completed" for t in plain)
    for t in barged:
        assert t.barge_in_status == "cancelled"
        assert t.barge_in_latency_ms is not None and t.barge_in_latency_ms >= 0
        assert t.barge_in_done_ms is not None and t.barge_in_done_ms >= t.barge_in_latency_ms
        assert t.barge_in_reply_ms is not None  # the interruption was answered
    assert s.barge_ins_cancelled == 2
    assert s.figures["VAD endpoint lag (audio time)"].n == 4
    assert s.figures["overhead beyond the VAD endpoint"].n == 4
    assert len(report.send_lag_ms) == 2
    assert LoadReport.model_validate_json(report.model_dump_json()) == report
