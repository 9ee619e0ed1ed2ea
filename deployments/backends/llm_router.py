"""Route chat to one of several LLM backends, falling back when one fails (an LLM proxy).

A *group* is an ordered list of routes, each an ordinary LLM backend (``openai``,
``llamacpp``, any registered name or ``"module:Class"``). The router's ``model`` picks the
group. A request goes to the group's healthy routes in order and then, as a last resort, to
the unhealthy ones; each route gets ``1 + retries`` attempts with exponential backoff.

A failure can only be hidden from the client while no text has reached it: after the first
delta the listener already heard part of the reply, so the error is raised instead of
switching models mid-sentence (the rule of ``serve_app.engine.model_clients.stream_with_retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployments.backends.base import Backend
from deployments.common import error_summary
from deployments.registry import backend_class
from deployments.types import ChatMessage, SamplingParams

logger = logging.getLogger("voxray")

DEFAULT_GROUP = "default"


class LLMRoutingError(RuntimeError):
    """Every route of the group failed, or a route failed after its reply had started."""


def _ctx(error: Any) -> dict[str, Any]:
    """An error's context (limits, the raised ValueError), which its type's message needs."""
    return {"ctx": error["ctx"]} if "ctx" in error else {}


class RouteSpec(BaseModel):
    """One route of a group: an LLM backend with its model and options.

    Attributes:
        name: Unique within the group, for logs and stats; default ``"<backend>:<model>"``.
        backend: Registry name of an LLM backend, or ``"module:Class"``; not ``router``.
        model: The sub-backend's model spec.
        options: The sub-backend's options, validated by its own ``Options`` model.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    backend: str
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_backend(self) -> RouteSpec:
        try:
            cls = backend_class("llm", self.backend)
        except (KeyError, ImportError, AttributeError) as exc:
            raise ValueError(str(exc.args[0]) if exc.args else repr(exc)) from None
        if isinstance(cls, type) and issubclass(cls, LLMRouter):
            raise ValueError("a route cannot be another router")
        if not hasattr(cls, "Options"):
            raise ValueError(f"{self.backend!r} is not a backend: it has no Options model")
        try:
            cls.Options.model_validate(self.options)
        except ValidationError as exc:
            # Re-raised under `options`, so a typo reads `...groups.default.0.options.bsae_url`;
            # pydantic merges a ValidationError raised here into the outer model's errors.
            errors: list[Any] = [
                {**_ctx(e), "type": e["type"], "loc": ("options", *e["loc"]), "input": e["input"]}
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(exc.title, errors) from None
        if self.name is None:
            self.name = f"{self.backend}:{self.model}"
        return self


class LLMRouterOptions(BaseModel):
    """Options of :class:`LLMRouter`.

    Attributes:
        groups: Group name → routes, tried in order.
        retries: Extra attempts on the same route before falling back to the next.
        backoff_s: Pause before the first retry; doubled for each further one.
        max_backoff_s: Cap of the pause.
        unhealthy_after: Consecutive failures that mark a route unhealthy.
        cooldown_s: How long an unhealthy route goes after the healthy ones.
    """

    model_config = ConfigDict(extra="forbid")

    groups: Annotated[dict[str, Annotated[list[RouteSpec], Field(min_length=1)]], Field(min_length=1)]
    retries: int = Field(default=1, ge=0, le=10)
    backoff_s: float = Field(default=0.2, ge=0)
    max_backoff_s: float = Field(default=2.0, ge=0)
    unhealthy_after: int = Field(default=2, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> LLMRouterOptions:
        for group, routes in self.groups.items():
            names = [route.name for route in routes]
            duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
            if duplicates:
                raise ValueError(f"group {group!r} has duplicate route names {duplicates}; set `name`")
        return self


@dataclass
class _Route:
    """A constructed route and its health."""

    name: str
    backend: Any
    consecutive_failures: int = 0
    failures: int = 0
    successes: int = 0
    fallbacks_to: int = 0
    last_error: str | None = None
    unhealthy_until: float | None = None


class LLMRouter(Backend):
    """Streams chat from the first route of a group that works.

    Args:
        model: The group to serve; ``None`` takes the group named ``default``.
        options: See :class:`LLMRouterOptions`.
        clock: Monotonic seconds, for the cooldown (injectable for tests).
        sleep: Awaitable pause, for the backoff (injectable for tests).

    Raises:
        ValueError: ``model`` names no group.
        LLMRoutingError: A sub-backend could not be constructed.
    """

    Options = LLMRouterOptions

    def __init__(
        self,
        model: str | None,
        options: dict[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        super().__init__(model, options)
        opts: LLMRouterOptions = self.options
        self.group = DEFAULT_GROUP if model is None else model
        if self.group not in opts.groups:
            raise ValueError(
                f"the router's model names a group; {self.group!r} is not one of {sorted(opts.groups)}"
            )
        self._clock = clock
        self._sleep = sleep
        self._groups: dict[str, list[_Route]] = {}
        for group, specs in opts.groups.items():
            self._groups[group] = [self._build(group, spec) for spec in specs]
        self._active = 0
        self._deltas = 0
        self._aborted = 0

    @staticmethod
    def _build(group: str, spec: RouteSpec) -> _Route:
        assert spec.name is not None  # set by RouteSpec's validator
        try:
            backend = backend_class("llm", spec.backend)(spec.model, spec.options)
        except Exception as exc:
            raise LLMRoutingError(
                f"LLM route {group}/{spec.name} could not be built: {error_summary(exc)}"
            ) from exc
        return _Route(spec.name, backend)

    # --- health -----------------------------------------------------------------------

    def _healthy(self, route: _Route) -> bool:
        return route.unhealthy_until is None or self._clock() >= route.unhealthy_until

    def _succeeded(self, route: _Route) -> None:
        if route.unhealthy_until is not None:
            logger.info("LLM route %s recovered", route.name)
        route.successes += 1
        route.consecutive_failures = 0
        route.unhealthy_until = None

    def _failed(self, route: _Route, exc: BaseException, *, now_unhealthy: bool = False) -> None:
        route.failures += 1
        route.consecutive_failures += 1
        route.last_error = error_summary(exc)
        if now_unhealthy:
            route.consecutive_failures = max(route.consecutive_failures, self.options.unhealthy_after)
        if route.consecutive_failures >= self.options.unhealthy_after:
            # Re-armed on every failure past the threshold, so a route that fails its
            # first request after the cooldown is skipped for another full cooldown.
            if self._healthy(route):
                logger.warning(
                    "LLM route %s unhealthy after %d consecutive failures (last: %s); tried last for %.0f s",
                    route.name,
                    route.consecutive_failures,
                    route.last_error,
                    self.options.cooldown_s,
                )
            route.unhealthy_until = self._clock() + self.options.cooldown_s

    def _backoff(self, retry: int) -> float:
        opts: LLMRouterOptions = self.options
        return min(opts.backoff_s * 2 ** (retry - 1), opts.max_backoff_s)

    # --- serving ----------------------------------------------------------------------

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the reply's text deltas from the first route that answers.

        Raises:
            LLMRoutingError: Every route failed before its first delta (the message lists
                each route's last error), or the serving route failed after it.
        """
        routes = self._groups[self.group]
        # Healthy routes first, in configured order; unhealthy ones stay as a last resort,
        # so a request is never refused while any route might still work.
        order = sorted(routes, key=lambda r: not self._healthy(r))  # stable: keeps config order
        errors: dict[str, str] = {}
        self._active += 1
        finished = False
        try:
            for route in order:
                if route is not routes[0]:
                    route.fallbacks_to += 1
                    if errors:
                        logger.info(
                            "LLM falling back to route %s (%s)", route.name, "; ".join(errors.values())
                        )
                for attempt in range(1 + self.options.retries):
                    if attempt:
                        await self._sleep(self._backoff(attempt))
                    yielded = 0
                    error: Exception | None = None
                    stream: Any = None
                    try:
                        stream = route.backend.chat(messages, params)
                        while True:
                            # Only what the sub-stream raises is the route's failure; what
                            # reaches the `yield` below comes from our consumer.
                            try:
                                delta = await stream.__anext__()
                            except StopAsyncIteration:
                                break
                            except Exception as exc:
                                error = exc
                                break
                            yielded += 1
                            self._deltas += 1
                            yield delta
                    except Exception as exc:  # chat() itself raised before streaming
                        if stream is not None:
                            raise
                        error = exc
                    except BaseException:
                        # The consumer closed or cancelled us (barge-in): not the route's
                        # fault, never retried; if it had answered, it counts as working.
                        if yielded:
                            self._succeeded(route)
                        raise
                    finally:
                        if stream is not None:
                            await _close(stream)
                    if error is None:
                        self._succeeded(route)
                        finished = True
                        return
                    if not yielded:
                        logger.warning(
                            "LLM route %s attempt %d of %d failed: %s",
                            route.name,
                            attempt + 1,
                            1 + self.options.retries,
                            error_summary(error),
                        )
                    self._failed(route, error)
                    errors[route.name] = f"{route.name}: {route.last_error}"
                    if yielded:
                        raise LLMRoutingError(
                            f"LLM route {route.name} failed after {yielded} deltas: {route.last_error}"
                        ) from error
            raise LLMRoutingError(
                f"all LLM routes of group {self.group!r} failed: " + "; ".join(errors.values())
            )
        finally:
            self._active -= 1
            self._aborted += not finished

    async def warmup(self) -> None:
        """Warm every route; one that fails is logged and marked unhealthy.

        Raises:
            LLMRoutingError: Every route of the served group failed to warm up.
        """
        failed: set[int] = set()
        for group, routes in self._groups.items():
            for route in routes:
                try:
                    await route.backend.warmup()
                except Exception as exc:
                    logger.warning("LLM route %s/%s failed warmup: %s", group, route.name, error_summary(exc))
                    self._failed(route, exc, now_unhealthy=True)
                    failed.add(id(route))
        served = self._groups[self.group]
        if all(id(route) in failed for route in served):
            detail = "; ".join(f"{r.name}: {r.last_error}" for r in served)
            raise LLMRoutingError(f"no LLM route of group {self.group!r} warmed up: {detail}")

    async def aclose(self) -> None:
        """Close the sub-backends that hold resources (connection pools)."""
        for routes in self._groups.values():
            for route in routes:
                close = getattr(route.backend, "aclose", None)
                if close is not None:
                    await close()

    def stats(self) -> dict[str, Any]:
        """The router's counters and each route's health.

        ``active_generations``, ``tokens_generated`` (deltas yielded) and
        ``aborted_generations`` (closed or failed before the end) count the router's own
        streams across all routes; ``routes`` maps each group to its routes' health.
        """
        return {
            "active_generations": self._active,
            "tokens_generated": self._deltas,
            "aborted_generations": self._aborted,
            "routes": {
                group: [
                    {
                        "name": r.name,
                        "healthy": self._healthy(r),
                        "consecutive_failures": r.consecutive_failures,
                        "failures": r.failures,
                        "successes": r.successes,
                        "fallbacks_to": r.fallbacks_to,
                        "last_error": r.last_error,
                    }
                    for r in routes
                ]
                for group, routes in self._groups.items()
            },
        }


async def _close(stream: Any) -> None:
    """Close a sub-stream so its backend aborts the request.

    Shielded: when our consumer is cancelled, the close still runs to the end, since that is
    what tells the engine (or the remote server) to stop generating.
    """
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(close())
