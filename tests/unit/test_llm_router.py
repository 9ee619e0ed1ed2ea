"""LLMRouter without Ray: fallback, retries, health, config errors and cancellation.

The routes are :class:`FakeRoute` backends defined here and named by their
``"module:Class"`` string, exactly as a config would name an out-of-tree backend. Time is
injected: a fake clock for the cooldown and a recording sleep for the backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.backends.base import Backend
from deployments.backends.llm_router import LLMRouter, LLMRoutingError
from deployments.registry import backend_class
from deployments.types import ChatMessage, SamplingParams
from serve_app.config import LLMConfig

FAKE = "tests.unit.test_llm_router:FakeRoute"
MESSAGES = [ChatMessage(role="user", content="Capital of France?")]
PARAMS = SamplingParams()

INSTANCES: dict[str, FakeRoute] = {}
"""Each FakeRoute by its ``tag``, so a test can look at the routes the router built."""


class FakeRoute(Backend):
    """A scripted LLM route that records how each of its streams ended.

    A failing call raises before its first delta unless ``fail_after`` is set.
    """

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        tag: str
        reply: list[str] = Field(default_factory=lambda: ["Paris", " it", " is."])
        fail_always: bool = False
        fail_calls: list[int] = Field(default_factory=list, description="1-based calls that fail")
        fail_after: int | None = Field(default=None, description="deltas before a mid-stream failure")
        hang_after: int | None = Field(default=None, description="deltas before waiting forever")
        fail_warmup: bool = False

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        INSTANCES[self.options.tag] = self
        self.calls = 0
        self.active = 0
        self.completed = 0
        self.closed = 0  # GeneratorExit: the consumer called aclose()
        self.cancelled = 0  # CancelledError inside the stream
        self.warmed = False
        self.aclosed = False

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        self.calls += 1
        self.active += 1
        opts = self.options
        try:
            if opts.fail_always or self.calls in opts.fail_calls:
                raise ConnectionError(f"{opts.tag} is down\nsecond line of detail")
            for index, delta in enumerate(opts.reply):
                if opts.fail_after is not None and index >= opts.fail_after:
                    raise RuntimeError(f"{opts.tag} broke mid-stream")
                if opts.hang_after is not None and index >= opts.hang_after:
                    await asyncio.Event().wait()
                yield delta
            self.completed += 1
        except GeneratorExit:
            self.closed += 1
            raise
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    async def warmup(self) -> None:
        if self.options.fail_warmup:
            raise RuntimeError(f"{self.options.tag} cannot load")
        self.warmed = True

    async def aclose(self) -> None:
        self.aclosed = True


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records the backoff pauses and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def route(tag: str, **options: Any) -> dict[str, Any]:
    return {"name": tag, "backend": FAKE, "options": {"tag": tag, **options}}


def make_router(
    *routes: dict[str, Any], clock: Clock | None = None, sleep: Any = None, **options: Any
) -> LLMRouter:
    INSTANCES.clear()
    return LLMRouter(
        "default",
        {"groups": {"default": list(routes)}, **options},
        clock=clock or Clock(),
        sleep=sleep or Sleeps(),
    )


async def reply(router: LLMRouter) -> str:
    return "".join([delta async for delta in router.chat(MESSAGES, PARAMS)])


def route_stats(router: LLMRouter, group: str = "default") -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in router.stats()["routes"][group]}


def test_router_is_registered() -> None:
    assert backend_class("llm", "router") is LLMRouter


async def test_falls_back_when_a_route_fails_before_its_first_delta() -> None:
    sleeps = Sleeps()
    router = make_router(route("a", fail_always=True), route("b", reply=["From", " b."]), sleep=sleeps)
    assert await reply(router) == "From b."
    a, b = INSTANCES["a"], INSTANCES["b"]
    assert (a.calls, b.calls, b.completed) == (2, 1, 1)  # 1 + retries on a, then b
    assert sleeps.pauses == [0.2]
    stats = route_stats(router)
    assert stats["a"] == {
        "name": "a",
        "healthy": False,  # unhealthy_after=2 consecutive failures
        "consecutive_failures": 2,
        "failures": 2,
        "successes": 0,
        "fallbacks_to": 0,
        "last_error": "ConnectionError: a is down",
    }
    assert stats["b"]["fallbacks_to"] == 1 and stats["b"]["successes"] == 1 and stats["b"]["healthy"]
    counters = {k: v for k, v in router.stats().items() if k != "routes"}
    assert counters == {"active_generations": 0, "tokens_generated": 2, "aborted_generations": 0}


async def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    sleeps = Sleeps()
    router = make_router(
        route("a", fail_calls=[1, 2, 3, 4]),
        route("b"),
        sleep=sleeps,
        retries=4,
        backoff_s=0.5,
        max_backoff_s=1.5,
        unhealthy_after=10,
    )
    assert await reply(router) == "Paris it is."
    assert sleeps.pauses == [0.5, 1.0, 1.5, 1.5]
    assert (INSTANCES["a"].calls, INSTANCES["b"].calls) == (5, 0)
    stats = route_stats(router)["a"]
    assert (stats["failures"], stats["consecutive_failures"], stats["successes"]) == (4, 0, 1)


async def test_a_failure_after_the_first_delta_is_raised_not_retried() -> None:
    sleeps = Sleeps()
    router = make_router(route("a", fail_after=1), route("b"), sleep=sleeps)
    received: list[str] = []
    with pytest.raises(LLMRoutingError, match=r"route a failed after 1 deltas: RuntimeError") as info:
        async for delta in router.chat(MESSAGES, PARAMS):
            received.append(delta)
    assert received == ["Paris"]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert (INSTANCES["a"].calls, INSTANCES["b"].calls) == (1, 0)
    assert sleeps.pauses == []
    assert route_stats(router)["a"]["failures"] == 1
    assert router.stats()["aborted_generations"] == 1


async def test_unhealthy_route_is_skipped_until_its_cooldown_ends(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    router = make_router(route("a", fail_calls=[1, 2]), route("b"), clock=clock, retries=0, cooldown_s=30)
    caplog.set_level(logging.INFO, logger="voxray")
    a, b = INSTANCES["a"], INSTANCES["b"]
    for _ in range(2):  # two consecutive failures mark a unhealthy
        assert await reply(router) == "Paris it is."
    assert (a.calls, b.calls) == (2, 2)
    assert not route_stats(router)["a"]["healthy"]
    assert any("a unhealthy after 2 consecutive failures" in r.message for r in caplog.records)

    clock.now += 29
    await reply(router)
    assert (a.calls, b.calls) == (2, 3)  # skipped while a healthy route exists
    assert route_stats(router)["b"]["fallbacks_to"] == 3

    clock.now += 2  # cooldown over: a is tried first again, and works
    await reply(router)
    assert (a.calls, b.calls) == (3, 3)
    assert route_stats(router)["a"] | {"last_error": None} == {
        "name": "a",
        "healthy": True,
        "consecutive_failures": 0,
        "failures": 2,
        "successes": 1,
        "fallbacks_to": 0,
        "last_error": None,
    }
    assert any(r.message == "LLM route a recovered" and r.levelno == logging.INFO for r in caplog.records)


async def test_a_route_failing_after_its_cooldown_is_skipped_for_another_cooldown() -> None:
    clock = Clock()
    router = make_router(route("a", fail_always=True), route("b"), clock=clock, retries=0, cooldown_s=30)
    for _ in range(2):
        await reply(router)
    clock.now += 31
    await reply(router)  # a is tried again (half-open), fails, and is skipped again
    assert INSTANCES["a"].calls == 3
    clock.now += 29
    await reply(router)
    assert INSTANCES["a"].calls == 3


async def test_unhealthy_route_is_still_tried_when_the_healthy_ones_fail() -> None:
    router = make_router(
        route("a", fail_calls=[1], reply=["From", " a."]),
        route("b", fail_calls=[2]),
        retries=0,
        unhealthy_after=1,
    )
    assert await reply(router) == "Paris it is."  # a failed once: unhealthy; b answered
    assert not route_stats(router)["a"]["healthy"]
    # b (healthy) goes first now and fails; the unhealthy a is the last resort and answers.
    assert await reply(router) == "From a."
    assert (INSTANCES["a"].calls, INSTANCES["b"].calls) == (2, 2)


async def test_the_only_route_is_tried_even_when_unhealthy() -> None:
    router = make_router(route("a", fail_calls=[1]), retries=0, unhealthy_after=1)
    with pytest.raises(LLMRoutingError):
        await reply(router)
    assert not route_stats(router)["a"]["healthy"]
    assert await reply(router) == "Paris it is."
    assert route_stats(router)["a"]["healthy"]


async def test_when_every_route_fails_the_error_lists_each_briefly() -> None:
    router = make_router(route("a", fail_always=True), route("b", fail_always=True))
    with pytest.raises(LLMRoutingError) as info:
        await reply(router)
    message = str(info.value)
    assert message == (
        "all LLM routes of group 'default' failed: "
        "a: ConnectionError: a is down; b: ConnectionError: b is down"
    )
    assert (INSTANCES["a"].calls, INSTANCES["b"].calls) == (2, 2)


async def test_closing_the_router_stream_closes_the_active_route_stream() -> None:
    router = make_router(route("a", hang_after=1), route("b"))
    stream = router.chat(MESSAGES, PARAMS)
    assert await anext(stream) == "Paris"
    a = INSTANCES["a"]
    assert a.active == 1
    await stream.aclose()
    assert (a.active, a.closed, a.calls, INSTANCES["b"].calls) == (0, 1, 1, 0)
    stats = router.stats()
    assert (stats["active_generations"], stats["aborted_generations"]) == (0, 1)
    assert route_stats(router)["a"]["failures"] == 0  # a barge-in is not the route's fault


async def test_cancelling_the_consumer_cancels_the_route_stream_and_leaks_no_task() -> None:
    router = make_router(route("a", hang_after=1), route("b"))
    tasks_before = asyncio.all_tasks()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in router.chat(MESSAGES, PARAMS):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # let any shielded close finish
    a = INSTANCES["a"]
    assert (a.active, a.cancelled, a.calls, INSTANCES["b"].calls) == (0, 1, 1, 0)
    assert route_stats(router)["a"]["failures"] == 0
    assert asyncio.all_tasks() == tasks_before
    assert router.stats()["active_generations"] == 0


async def test_cancelling_during_the_backoff_stops_the_retries() -> None:
    started = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        started.set()
        await asyncio.Event().wait()

    router = make_router(route("a", fail_always=True), route("b"), sleep=slow_sleep)
    task = asyncio.create_task(reply(router))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (INSTANCES["a"].calls, INSTANCES["b"].calls) == (1, 0)
    assert router.stats()["active_generations"] == 0


async def test_warmup_tolerates_some_failures_but_not_all(caplog: pytest.LogCaptureFixture) -> None:
    router = make_router(route("a", fail_warmup=True), route("b"))
    await router.warmup()
    assert INSTANCES["b"].warmed
    assert not route_stats(router)["a"]["healthy"]
    assert "a failed warmup: RuntimeError: a cannot load" in caplog.text
    assert await reply(router) == "Paris it is."
    assert INSTANCES["a"].calls == 0  # skipped: b is healthy

    # Another group's failures do not matter; the served group's all failing does.
    options = {"groups": {"default": [route("c")], "small": [route("d", fail_warmup=True)]}}
    await LLMRouter("default", options).warmup()
    with pytest.raises(LLMRoutingError, match="no LLM route of group 'small' warmed up: d: RuntimeError"):
        await LLMRouter("small", options).warmup()


async def test_aclose_closes_the_routes() -> None:
    router = make_router(route("a"), route("b"))
    await router.aclose()
    assert INSTANCES["a"].aclosed and INSTANCES["b"].aclosed


def test_model_names_the_group() -> None:
    options = {"groups": {"default": [route("a")], "small": [route("b")]}}
    assert LLMRouter(None, options).group == "default"
    assert LLMRouter("small", options).group == "small"
    with pytest.raises(ValueError, match=r"'large' is not one of \['default', 'small'\]"):
        LLMRouter("large", options)
    with pytest.raises(ValueError, match=r"'default' is not one of \['small'\]"):
        LLMRouter(None, {"groups": {"small": [route("b")]}})


def test_route_names_default_to_backend_and_model_and_must_be_unique() -> None:
    spec = {"backend": FAKE, "model": "m1", "options": {"tag": "x"}}
    router = LLMRouter(None, {"groups": {"default": [spec, {**spec, "model": "m2"}]}})
    assert [r["name"] for r in router.stats()["routes"]["default"]] == [f"{FAKE}:m1", f"{FAKE}:m2"]
    with pytest.raises(ValidationError, match=r"duplicate route names \['tests.unit"):
        LLMRouter.Options.model_validate({"groups": {"default": [spec, spec]}})
    with pytest.raises(ValidationError, match=r"duplicate route names \['a'\]"):
        LLMRouter.Options.model_validate({"groups": {"default": [route("a"), route("a")]}})


def _config_errors(llm: dict[str, Any]) -> list[str]:
    """Errors of an ``llm`` config block as ``build_app`` reports them: ``dotted.path: message``.

    Paths are relative to ``llm``, as ``build_app`` reports them (``llm.options.groups...``).
    """
    with pytest.raises(ValidationError) as info:
        LLMConfig.model_validate(llm)
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in info.value.errors()]


def test_a_typo_in_a_route_option_fails_at_config_time_with_its_path() -> None:
    typo = {"name": "x", "backend": "openai", "model": "m", "options": {"bsae_url": "http://h/v1"}}
    errors = _config_errors({"backend": "router", "options": {"groups": {"default": [typo]}}})
    assert errors == [
        "options.groups.default.0.options.base_url: Field required",
        "options.groups.default.0.options.bsae_url: Extra inputs are not permitted",
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"backend": "router"}, "options.groups.default.0: Value error, a route cannot be another router"),
        (
            {"backend": "deployments.backends.llm_router:LLMRouter"},
            "options.groups.default.0: Value error, a route cannot be another router",
        ),
        ({"backend": "nope"}, "options.groups.default.0: Value error, unknown llm backend 'nope'; known: ["),
        (
            {"backend": "no_such_module:X"},
            "options.groups.default.0: Value error, No module named 'no_such_module'",
        ),
        (
            {"backend": "asyncio:sleep"},
            "options.groups.default.0: Value error, 'asyncio:sleep' is not a backend",
        ),
        ({"backend": "fake", "bogus": 1}, "options.groups.default.0.bogus: Extra inputs are not permitted"),
        (
            {"backend": "fake", "options": {"reply": 3}},
            "options.groups.default.0.options.reply: Input should be a valid string",
        ),
    ],
)
def test_bad_routes_fail_at_config_time(entry: dict[str, Any], expected: str) -> None:
    errors = _config_errors({"backend": "router", "options": {"groups": {"default": [entry]}}})
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"groups": {}}, "options.groups: Dictionary should have at least 1 item"),
        ({"groups": {"default": []}}, "options.groups.default: List should have at least 1 item"),
        (
            {"groups": {"default": [{"backend": "fake"}]}, "retries": -1},
            "options.retries: Input should be greater",
        ),
        ({"groups": {"default": [{"backend": "fake"}]}, "cooldwn_s": 1}, "options.cooldwn_s: Extra inputs"),
    ],
)
def test_bad_router_options_fail_at_config_time(options: dict[str, Any], expected: str) -> None:
    errors = _config_errors({"backend": "router", "options": options})
    assert any(e.startswith(expected) for e in errors), errors
