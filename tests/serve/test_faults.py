"""Fault injection: a model replica is killed (``ray.kill``) in the middle of a spoken turn.

The real Ray Serve app runs with two replicas each of ASR, LLM and TTS (fake backends with
scripted delays, so every call takes long enough to be killed in flight). For each case the
test finds the replica that is serving this session's call, kills it, and checks that the
WebSocket session survives: the killed turn either completes (retried on the other replica)
or ends with an ``error`` event and ``response.done`` status ``failed``, and the next turn
on the same socket completes with audio. Every event is validated by the test client.

Whether a kill landed before or after a call's first output is a race in general. The test
makes it decidable without timing assertions: it knows a lower bound of when the call
started (the last probe that still saw the replica idle) and the fake's fixed delays, so if
the kill came early enough the outcome is certain and is asserted; otherwise only the
either-or contract is.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import ray
from ray import serve
from ray.exceptions import RayActorError

from tests.conftest import deploy_app, replica_names
from tests.realtime_client import RealtimeTestClient

APP = "faultapp"
MODELS = ("ASR", "LLM", "TTS")
QUESTION = "What is the capital of France?"

ASR_DELAY_S = 1.0
LLM_FIRST_TOKEN_S = 1.5
LLM_TOKENS_PER_S = 10.0
TTS_FIRST_CHUNK_S = 1.0
REPLY = (
    "Paris is the capital of France. It sits on the river Seine in the north of the country, "
    "and it has been the seat of its government for many centuries now."
)
REPLY_TOKENS = len(REPLY.split(" "))
KILL_MARGIN_S = 0.5
"""Allowance for ``ray.kill`` to take effect after it returns, when deciding the outcome."""

ARGS: dict[str, Any] = {
    "asr": {"backend": "fake", "options": {"transcripts": [QUESTION], "delay_ms": ASR_DELAY_S * 1000}},
    "llm": {
        "backend": "fake",
        "options": {
            "reply": REPLY,
            "first_token_ms": LLM_FIRST_TOKEN_S * 1000,
            "tokens_per_s": LLM_TOKENS_PER_S,
        },
    },
    "tts": {
        "backend": "fake",
        "options": {"first_chunk_ms": TTS_FIRST_CHUNK_S * 1000, "ms_per_char": 20, "realtime_factor": 0.2},
    },
    # One ASR and one LLM call per turn (no speculative calls to mistake for the turn's),
    # audio sent as soon as it is made, and the first phrase cut early so audio (the sign
    # that the LLM has yielded) arrives long before the LLM stream can have ended.
    "session": {"speculative_turns": False, "max_audio_lead_ms": 0, "first_phrase_max_words": 4},
}


@pytest.fixture(scope="module")
def app_url(serve_instance: str) -> Iterator[str]:
    """The app with two replicas of each model deployment, deleted after the module."""
    import serve_app.app as app_module

    # build_app binds each deployment with its fixed options; swapping in replicated copies
    # keeps the app's wiring (Ingress arguments) build_app's own. 0.1 logical CPU each: the
    # test cluster has 8, shared by every app the session deploys.
    replicated = {
        name: getattr(app_module, name).options(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
        for name in ("ASRDeployment", "LLMDeployment", "TTSDeployment")
    }
    with mock.patch.multiple(app_module, **replicated):
        prefix = deploy_app(APP, ARGS)
    try:
        yield f"{serve_instance}{prefix}/v1/realtime"
    finally:
        serve.delete(APP)


@pytest.fixture
def full_strength(app_url: str) -> str:
    """Wait until every model deployment has its two replicas again (after an earlier kill)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        deployments = serve.status().applications[APP].deployments
        if all(
            deployments[name].replica_states == {"RUNNING": 2} and len(replica_names(APP, name)) == 2
            for name in MODELS
        ):
            return app_url
        time.sleep(0.5)
    raise TimeoutError(f"{APP} did not get back to two replicas per model: {serve.status()}")


@dataclass(frozen=True)
class Kill:
    """One replica killed under a call.

    Attributes:
        replica: The killed actor's name.
        after_start_s: Upper bound of how long the call had run when the kill was sent:
            from the last probe that saw the replica idle to ``ray.kill`` returning.
    """

    replica: str
    after_start_s: float


async def kill_busy_replica(deployment: str, ready: Callable[[], bool], timeout_s: float = 90) -> Kill:
    """Kill the replica of ``deployment`` serving a call, at the first moment ``ready()`` holds.

    Start before the call does: a replica must be seen idle once so its call's start is
    bounded. Serve counts the requests in progress on each replica; that probe runs on the
    replica's control thread, so it answers even while the model call awaits.
    """
    idle_since: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in replica_names(APP, deployment):
            sent = time.perf_counter()
            actor = ray.get_actor(name, namespace="serve")
            try:
                ongoing = await actor.get_num_ongoing_requests.remote()
            except RayActorError:
                continue  # a replica that died earlier; its replacement shows up later
            if not ongoing:
                idle_since[name] = sent
            elif name in idle_since and ready():
                ray.kill(actor, no_restart=False)
                return Kill(name, time.perf_counter() - idle_since[name])
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {deployment} replica was seen serving a call")


async def spoken_turn(client: RealtimeTestClient, make_utterance: Any) -> None:
    audio = make_utterance(QUESTION, lead_silence_s=0.3, trail_silence_s=1.0)
    await client.stream_audio(audio, realtime=False)


@dataclass(frozen=True)
class Case:
    """One fault: which deployment, when, and what outcome is certain if the kill is early.

    Attributes:
        deployment: Whose replica is killed.
        after_output: Kill only once reply audio reached the client.
        certain_within_s: If the kill is sent sooner than this after the call started (less
            ``KILL_MARGIN_S``), ``expect`` is certain; ``inf``: always.
        expect: The certain outcome, or ``None`` when either is acceptable.
    """

    deployment: str
    after_output: bool
    certain_within_s: float
    expect: str | None


CASES = {
    # A transcription is retried whatever point it had reached: it must complete.
    "asr": Case("ASR", False, math.inf, "completed"),
    # Nothing streamed yet (the first delta takes LLM_FIRST_TOKEN_S): restarted elsewhere.
    "llm-before-output": Case("LLM", False, LLM_FIRST_TOKEN_S, "completed"),
    # Audio went out, so the LLM had yielded, and its stream lasts at least this long:
    # a retry would repeat the reply, so the response fails instead.
    "llm-after-output": Case(
        "LLM", True, LLM_FIRST_TOKEN_S + (REPLY_TOKENS - 1) / LLM_TOKENS_PER_S, "failed"
    ),
    "tts-before-output": Case("TTS", False, TTS_FIRST_CHUNK_S, "completed"),
    # The busy TTS call may be a later phrase's that has not yielded yet: either outcome.
    "tts-after-output": Case("TTS", True, 0.0, None),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_session_survives_a_replica_killed_mid_turn(
    case: Case, full_strength: str, make_utterance: Any
) -> None:
    async with RealtimeTestClient(full_strength) as client:
        audio_arrived: Callable[[], bool] = lambda: bool(client.of("response.output_audio.delta"))  # noqa: E731
        killer = asyncio.create_task(
            kill_busy_replica(case.deployment, audio_arrived if case.after_output else lambda: True)
        )
        await asyncio.sleep(0.3)  # every replica probed idle at least once before the call
        await spoken_turn(client, make_utterance)
        kill = await killer

        done = await client.wait_for("response.done", timeout=90)
        response_id = done["response"]["id"]
        status = done["response"]["status"]
        transcripts = client.of("conversation.item.input_audio_transcription.completed")
        assert [t["transcript"] for t in transcripts] == [QUESTION]
        if status == "completed":  # retried: the whole reply, once
            assert client.of("error") == []
            assert " ".join(client.reply_text(response_id).split()) == REPLY
            assert client.reply_audio(response_id)
        else:
            assert status == "failed", done
            [error] = client.of("error")
            assert error["error"]["type"] == "server_error"
            assert case.deployment in error["error"]["message"]
        if kill.after_start_s < case.certain_within_s - KILL_MARGIN_S:
            assert status == case.expect, (kill, client.types())

        # The same socket takes the next turn as if nothing happened.
        errors_before = len(client.of("error"))
        await spoken_turn(client, make_utterance)
        done = await client.wait_for("response.done", count=2, timeout=90)
        assert done["response"]["status"] == "completed", done
        assert client.reply_audio(done["response"]["id"])
        assert len(client.of("conversation.item.input_audio_transcription.completed")) == 2
        assert len(client.of("error")) == errors_before
