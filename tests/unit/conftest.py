"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serve_app.observability import metrics
from serve_app.observability.metrics import MemoryRecorder


@pytest.fixture
def recorded() -> Iterator[MemoryRecorder]:
    """Metrics recorded in memory for the test, instead of to Ray."""
    memory = MemoryRecorder()
    metrics.use_recorder(memory)
    yield memory
    metrics.use_recorder(None)
