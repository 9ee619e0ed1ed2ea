"""What a Session records in voxray's metrics and logs, with fakes and no Ray.

Outside a Ray worker the metrics go to ``serve_app.observability.metrics.MemoryRecorder``, read back here;
``tests/serve/test_metrics.py`` checks the same series through Ray's export and Prometheus.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from deployments.backends.fake import FakeASR, FakeLLM
from serve_app.engine.audio.vad import SileroVAD
from serve_app.observability import metrics
from serve_app.observability.metrics import CATALOGUE, MemoryRecorder
from tests.unit.test_session import Harness

FAKE = {"backend": "fake", "model": "-"}


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


def test_catalogue_names_are_prometheus_safe_and_unique() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        assert spec.name.startswith("voxray_") and spec.name.replace("_", "").isalnum(), spec.name
        assert "session" not in " ".join(spec.tags)  # never a per-session label
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(spec.buckets) and spec.buckets, spec.name
        if spec.kind == "counter":
            assert spec.exported_name == f"ray_{spec.name}_total"


def test_record_refuses_unknown_metrics_and_wrong_labels(recorded: MemoryRecorder) -> None:
    with pytest.raises(KeyError):
        metrics.record("voxray_no_such_metric", 1.0)
    with pytest.raises(ValueError, match="takes labels"):
        metrics.record("voxray_turns", 1.0)  # outcome missing
    with pytest.raises(ValueError, match="takes labels"):
        metrics.record("voxray_turns", 1.0, outcome="completed", session_id="sess_1")
    assert not recorded.values


async def test_a_spoken_turn_records_every_stage(
    vad: SileroVAD, make_utterance: Any, recorded: MemoryRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voxray")
    h = Harness(vad, asr=FakeASR(None, {"delay_ms": 30}), llm=FakeLLM(None, {"tokens_per_s": 200}))
    await h.session.start()
    try:
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        done = await h.recorder.wait_for("response.done")
    finally:
        await h.session.close()
    assert done["response"]["status"] == "completed"
    assert recorded.total("voxray_turns", outcome="completed") == 1
    [asr_s] = recorded.observed("voxray_asr_latency_seconds", deployment="ASR", outcome="ok", **FAKE)
    assert asr_s >= 0.03
    [ttft] = recorded.observed("voxray_llm_time_to_first_token_seconds", deployment="LLM", **FAKE)
    [rate] = recorded.observed("voxray_llm_tokens_per_second", deployment="LLM", **FAKE)
    assert 0 < ttft < 5 and 20 < rate < 1000  # the fake streams 200 deltas per second
    assert recorded.observed("voxray_tts_time_to_first_chunk_seconds", deployment="TTS", **FAKE)
    assert all(
        0 < rtf < 5 for rtf in recorded.observed("voxray_tts_real_time_factor", deployment="TTS", **FAKE)
    )
    [endpointing] = recorded.observed("voxray_endpointing_wait_seconds")
    [latency] = recorded.observed("voxray_voice_response_latency_seconds")
    metadata = done["response"]["metadata"]
    assert latency == pytest.approx(float(metadata["voxray.first_audio_ms"]) / 1000)
    assert endpointing == pytest.approx(float(metadata["voxray.endpointing_ms"]) / 1000)
    # One structured INFO line for the turn, without what was said.
    turn_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn {")]
    assert len(turn_lines) == 1
    fields = json.loads(turn_lines[0].removeprefix("turn "))
    assert fields["session_id"] == h.session.id and fields["turn_id"] == done["response"]["id"]
    assert fields["outcome"] == "completed" and fields["timings_ms"]["first_audio_ms"] > 0
    assert not any("France" in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


async def test_transcripts_and_model_input_are_logged_only_at_debug(
    vad: SileroVAD, make_utterance: Any, recorded: MemoryRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voxray")
    h = Harness(vad)
    await h.session.start()
    try:
        await h.speak(
            make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
        )
        await h.recorder.wait_for("response.done")
    finally:
        await h.session.close()
    debug = {r.getMessage().split(" ", 1)[0]: r for r in caplog.records if r.levelno == logging.DEBUG}
    assert {"transcript", "llm_input", "turn_text"} <= set(debug)
    assert "France" in debug["transcript"].getMessage()
    assert json.loads(debug["llm_input"].getMessage().split(" ", 1)[1])["messages"][-1]["role"] == "user"


async def test_a_failed_transcription_counts_as_an_asr_error(
    vad: SileroVAD, make_utterance: Any, recorded: MemoryRecorder
) -> None:
    h = Harness(vad, asr=FakeASR(None, {"fail": True}))
    await h.session.start()
    try:
        await h.speak(make_utterance("Hello there.", lead_silence_s=0.3, trail_silence_s=1.0))
        await h.recorder.wait_for("conversation.item.input_audio_transcription.failed")
    finally:
        await h.session.close()
    assert recorded.observed("voxray_asr_latency_seconds", outcome="error")
    assert not recorded.observed("voxray_asr_latency_seconds", outcome="ok")
