"""``/readyz``'s check (serve_app.server.readiness) against the fake backends, without Ray."""

from __future__ import annotations

import asyncio

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.engine.model_clients import ModelClients
from serve_app.server.readiness import ReadinessCheck, readiness_report


def clients(**options: dict) -> ModelClients:
    return ModelClients(
        FakeASR(None, options.get("asr", {})),
        FakeLLM(None, options.get("llm", {})),
        FakeTTS(None, options.get("tts", {})),
    )


async def test_ready_when_every_model_answers_and_the_result_is_reused() -> None:
    models = clients()
    check = ReadinessCheck(models, ok_ttl_s=60)
    first = await check.check()
    assert first.ready and set(first.models) == {"asr", "llm", "tts"}
    assert all(m["ok"] and m["ms"] >= 0 for m in first.models.values())
    again = await asyncio.gather(*(check.check() for _ in range(5)))
    assert all(r is first for r in again)  # cached: no new model calls
    assert models.asr.stats()["calls"] == 1
    # The probes' streams were closed after their first output: nothing keeps generating.
    assert models.llm.stats()["active_generations"] == 0
    assert models.tts.stats()["active_syntheses"] == 0


async def test_a_failing_model_makes_it_not_ready_and_says_which() -> None:
    check = ReadinessCheck(clients(tts={"fail": True}), failed_ttl_s=0)
    result = await check.check()
    assert not result.ready
    assert result.models["asr"]["ok"] and result.models["llm"]["ok"]
    assert result.models["tts"]["ok"] is False
    assert "FakeTTS scripted failure" in result.models["tts"]["error"]


async def test_a_slow_model_times_out_and_a_failure_is_checked_again_soon() -> None:
    models = clients(asr={"delay_ms": 500})
    check = ReadinessCheck(models, timeout_s=0.05, failed_ttl_s=0.2)
    result = await check.check()
    assert not result.ready and "no answer within 0.05 s" in result.models["asr"]["error"]
    assert (await check.check()) is result  # within failed_ttl_s
    await asyncio.sleep(0.25)
    assert (await check.check()) is not result  # checked again


async def test_concurrent_probes_share_one_check() -> None:
    models = clients(asr={"delay_ms": 100})
    check = ReadinessCheck(models)
    results = await asyncio.gather(*(check.check() for _ in range(8)))
    assert all(r is results[0] for r in results) and results[0].ready
    assert models.asr.stats()["calls"] == 1


async def test_report_is_503_while_draining_without_asking_the_models() -> None:
    models = clients()
    status, body = await readiness_report(ReadinessCheck(models), draining=True, sessions=3)
    assert (status, body) == (503, {"status": "draining", "sessions": 3})
    assert models.asr.stats()["calls"] == 0


async def test_report_names_the_failing_model() -> None:
    status, body = await readiness_report(ReadinessCheck(clients(llm={"fail_after_tokens": 0})), False, 0)
    assert status == 503 and body["status"] == "not_ready"
    assert body["models"]["llm"]["ok"] is False and body["models"]["asr"]["ok"] is True
    status, body = await readiness_report(ReadinessCheck(clients()), False, 0)
    assert status == 200 and body["status"] == "ready" and body["checked_s_ago"] >= 0
