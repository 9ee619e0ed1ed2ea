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


SENTENCES = [
    "The weather forecast says it will rain all afternoon in the city.",
    "Could you please send me the quarterly report before Friday?",
    "I think we should take the train instead of driving tonight.",
    "Our team finished the project two weeks ahead of schedule.",
    "She bought fresh bread, cheese and apples at the market.",
    "Remember to turn off the lights when you leave the office.",
]
# Three clearly different synthetic voices: two flite voices (a US woman, a Scottish man) and
# espeak-ng's formant synthesis. espeak-ng's own variants (m3 and m7) are too close to tell apart.
VOICES = {
    "slt": ["flite", "-voice", "slt", "-o", "{out}", "-t", "{text}"],
    "awb": ["flite", "-voice", "awb", "-o", "{out}", "-t", "{text}"],
    "espeak_m3": ["espeak-ng", "-v", "en-us+m3", "-w", "{out}", "{text}"],
}


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes, int]]:
    """(voice, PCM16, rate) for every sentence in every voice, voices interleaved."""
    import shutil
    import subprocess

    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install flite espeak-ng)")
    folder = tmp_path_factory.mktemp("voices")
    clips: dict[str, list[tuple[bytes, int]]] = {}
    for voice, command in VOICES.items():
        clips[voice] = []
        for i, text in enumerate(SENTENCES):
            out = folder / f"{voice}_{i}.wav"
            subprocess.run([a.format(out=out, text=text) for a in command], check=True, timeout=60)
            clips[voice].append(_read_wav(out))
    # A fixed order in which each voice both returns after others and speaks twice in a row.
    order = "slt awb slt espeak_m3 espeak_m3 awb slt espeak_m3 awb awb slt espeak_m3"
    order += " slt awb espeak_m3 slt awb espeak_m3"
    used = {voice: 0 for voice in VOICES}
    sequence = []
    for voice in order.split():
        sequence.append((voice, *clips[voice][used[voice]]))
        used[voice] += 1
    return sequence


def _best_mapping_accuracy(truth: list[str], predicted: list[int]) -> float:
    """Share of windows right under the best one-to-one mapping of labels to voices."""
    import collections
    import itertools

    counts = collections.Counter(zip(truth, predicted, strict=True))
    voices, labels = sorted(set(truth)), sorted(set(predicted))
    best = 0
    for chosen in itertools.permutations(labels, min(len(labels), len(voices))):
        for voice_order in itertools.permutations(voices, len(chosen)):
            best = max(best, sum(counts[(v, lab)] for v, lab in zip(voice_order, chosen, strict=True)))
    return best / len(truth)


@pytest.mark.parametrize("max_speakers", [None, 3])
def test_three_voices_are_told_apart(
    speaker_backend: Any, utterances: list[tuple[str, bytes, int]], max_speakers: int | None
) -> None:
    """Each utterance is one embedding call, as the live session sends them; 90 % of windows right."""
    from serve_app.engine.diarization import OnlineSpeakers

    speakers = OnlineSpeakers(max_speakers=max_speakers)
    truth: list[str] = []
    predicted: list[int] = []
    offset = 0.0
    for voice, pcm16, rate in utterances:
        embeddings = asyncio.run(speaker_backend.embed(pcm16, rate))
        assert embeddings.vectors, "every sentence is longer than one window"
        spans = speakers.assign(embeddings, offset_s=offset)
        truth += [voice] * len(spans)
        predicted += [span.label for span in spans]
        offset += len(pcm16) / 2 / rate
    accuracy = _best_mapping_accuracy(truth, predicted)
    assert accuracy >= 0.9, (accuracy, speakers.speakers())
    assert 3 <= len(speakers.speakers()) <= 4
