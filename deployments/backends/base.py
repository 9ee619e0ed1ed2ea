"""What every backend shares: an ``Options`` model and a constructor signature.

A backend is constructed as ``Backend(model, options)`` where ``model`` is a model spec
(``bundled:<name>``, a local path or a Hugging Face repo id; ``None`` for the default) and
``options`` a dict validated by ``Backend.Options`` (unknown keys are errors).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


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
