"""``GET /readyz``: are the models loaded and answering? One tiny request to each, cached.

Liveness (``/healthz``) only says the Ingress process answers. Readiness asks the ASR, LLM
and TTS deployments for a tiny piece of real work each (0.1 s of silence, a one-token
reply, one word of speech), concurrently, through the same handles sessions use. A result
is kept for ``ok_ttl_s`` (``failed_ttl_s`` when a model failed), so frequent probes from
many pods cost the models one small request per period, and probes that arrive while a
check runs share it. These requests are not counted in voxray's stage metrics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from deployments.types import ChatMessage, SamplingParams
from serve_app.engine.model_clients import ModelClients, client_error_text

ASR_RATE = 16_000
PROBE_SILENCE = bytes(2 * ASR_RATE // 10)  # 0.1 s of PCM16 silence
PROBE_TEXT = "ok"


@dataclass
class Readiness:
    """The outcome of one check.

    Attributes:
        ready: Every model answered in time.
        models: Per model (``asr``, ``llm``, ``tts``): ``ok``, ``ms`` and, on failure, ``error``.
        checked_at: ``time.monotonic()`` when the check finished.
    """

    ready: bool
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    checked_at: float = 0.0


class ReadinessCheck:
    """Checks the three models, at most once per TTL.

    Args:
        models: The model endpoints to probe.
        timeout_s: How long each model may take to answer.
        ok_ttl_s: How long a passing result is reused.
        failed_ttl_s: How long a failing result is reused (short: recovery shows quickly).
    """

    def __init__(
        self, models: ModelClients, timeout_s: float = 20.0, ok_ttl_s: float = 30.0, failed_ttl_s: float = 2.0
    ) -> None:
        self._models = models
        self._timeout_s = timeout_s
        self._ok_ttl_s = ok_ttl_s
        self._failed_ttl_s = failed_ttl_s
        self._last: Readiness | None = None
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        """The latest result if still fresh, else a new check (shared by concurrent callers)."""
        last = self._last
        if last is not None:
            ttl = self._ok_ttl_s if last.ready else self._failed_ttl_s
            if time.monotonic() - last.checked_at < ttl:
                return last
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check_now())
        result = await asyncio.shield(self._running)
        self._last = result
        return result

    async def _check_now(self) -> Readiness:
        names = ("asr", "llm", "tts")
        probes = (self._probe_asr(), self._probe_llm(), self._probe_tts())
        outcomes = await asyncio.gather(*(self._timed(p) for p in probes))
        models = dict(zip(names, outcomes, strict=True))
        return Readiness(all(m["ok"] for m in models.values()), models, time.monotonic())

    async def _timed(self, probe: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(probe, self._timeout_s)
        except TimeoutError:
            return {"ok": False, "ms": _ms(started), "error": f"no answer within {self._timeout_s:g} s"}
        except Exception as exc:
            return {"ok": False, "ms": _ms(started), "error": client_error_text(exc)}
        return {"ok": True, "ms": _ms(started)}

    async def _probe_asr(self) -> None:
        await self._models.asr.transcribe(PROBE_SILENCE, ASR_RATE, None)

    async def _probe_llm(self) -> None:
        messages = [ChatMessage(role="user", content="Say ok.")]
        stream = self._models.llm.chat(messages, SamplingParams(max_tokens=1, temperature=0.0))
        try:
            async for _ in stream:
                break
        finally:
            await stream.aclose()

    async def _probe_tts(self) -> None:
        stream = self._models.tts.synthesize(PROBE_TEXT, None)
        try:
            async for chunk in stream:
                if chunk.pcm16:
                    break
        finally:
            await stream.aclose()


async def readiness_report(
    check: ReadinessCheck, draining: bool, sessions: int
) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status code and body.

    Args:
        check: The replica's model check.
        draining: The replica is draining: not ready, whatever the models say (no probe sent).
        sessions: Live sessions on the replica (reported while draining).

    Returns:
        200 with ``status: ready``, or 503 with ``not_ready`` (and each model's error) or ``draining``.
    """
    if draining:
        return 503, {"status": "draining", "sessions": sessions}
    result = await check.check()
    body = {
        "status": "ready" if result.ready else "not_ready",
        "models": result.models,
        "checked_s_ago": round(time.monotonic() - result.checked_at, 1),
    }
    return (200 if result.ready else 503), body


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
