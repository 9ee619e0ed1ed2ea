"""What every backend shares: an ``Options`` model and a constructor signature.

A backend is constructed as ``Backend(model, options)`` where ``model`` is a model spec
(``bundled:<name>``, a local path or a Hugging Face repo id; ``None`` for the default) and
``options`` a dict validated by ``Backend.Options`` (unknown keys are errors).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class NoOptions(BaseModel):
    """Options model for backends that take none."""

    model_config = ConfigDict(extra="forbid")


class Backend:
    """Small base for backends: parses options; subclasses implement one protocol."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, model: str | None, options: dict[str, Any] | None = None) -> None:
        self.model_spec = model
        self.options: Any = self.Options.model_validate(options or {})

    async def warmup(self) -> None:
        """Run one tiny request so the first real one is not slow. Default: nothing."""

    def stats(self) -> dict[str, Any]:
        """Counters for tests and health checks (e.g. active generations). Default: none."""
        return {}


_ITEM, _DONE, _ERROR = "item", "done", "error"


async def stream_from_worker(
    executor: Executor, produce: Callable[[Callable[[T], None], threading.Event], None]
) -> AsyncIterator[T]:
    """Run a blocking producer in ``executor`` and stream what it emits.

    ``produce(emit, stop)`` runs in a worker thread and calls ``emit(item)`` for each item;
    it must return soon after ``stop`` is set. ``stop`` is set when the consumer closes this
    iterator or is cancelled. An exception in ``produce`` is re-raised to the consumer.

    Args:
        executor: Where ``produce`` runs; a one-worker executor also serialises producers.
        produce: The blocking producer.

    Yields:
        Each emitted item, in order.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def send(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            stop.set()

    def run() -> None:
        try:
            produce(lambda item: send(_ITEM, item), stop)
        except BaseException as exc:  # forwarded: the consumer re-raises it
            send(_ERROR, exc)
        else:
            send(_DONE, None)

    # run() never raises, so the executor future needs no awaiting.
    loop.run_in_executor(executor, run)
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        stop.set()
