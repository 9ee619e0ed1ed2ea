"""The Resemblyzer speaker backend on real audio: the same vectors as Resemblyzer, and voices told apart."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.models

FIXTURES = Path(__file__).parent.parent / "fixtures" / "speaker"


@pytest.fixture(scope="module")
def speaker_backend() -> Iterator[Any]:
    """The bundled Resemblyzer encoder (``bundled:resemblyzer-ge2e``), warmed up."""
    from deployments.backends.resemblyzer_speaker import ResemblyzerSpeaker

    backend = ResemblyzerSpeaker(None)
    asyncio.run(backend.warmup())
    yield backend


def _read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


@pytest.mark.parametrize(("case", "seconds"), [("full", None), ("short", 1.0)])
def test_vectors_match_resemblyzer(speaker_backend: Any, case: str, seconds: float | None) -> None:
    """Every window that Resemblyzer also embeds has (nearly) Resemblyzer's vector."""
    pcm16, rate = _read_wav(FIXTURES / "slt_clip.wav")
    if seconds is not None:
        pcm16 = pcm16[: int(seconds * rate) * 2]
    reference = np.load(FIXTURES / "reference.npz")
    result = asyncio.run(speaker_backend.embed(pcm16, rate))
    ours = {round(s, 2): np.array(v) for s, v in zip(result.starts_s, result.vectors, strict=True)}
    common = [
        (ours[round(float(s), 2)], v)
        for s, v in zip(reference[f"{case}_starts"], reference[f"{case}_vectors"], strict=True)
        if round(float(s), 2) in ours
    ]
    assert len(common) >= min(3, len(reference[f"{case}_starts"]))
    for mine, theirs in common:
        assert float(mine @ theirs) >= 0.999
