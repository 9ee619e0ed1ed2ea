"""Batched VAD: many streams judged in shared model calls decide what each alone would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.engine.audio.vad import (
    SileroVAD,
    SpeechStarted,
    SpeechStopped,
    VADEvent,
    VADStream,
    run_windows,
)
from serve_app.engine.audio.vad_batch import VADBatcher
from tests.conftest import PHRASES, SpeechCache

RATE = 24000
FRAME = 20 * RATE * 2 // 1000  # bytes in a 20 ms frame


@pytest.fixture(scope="module")
def vad(silero_model_path: Path) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture(scope="module")
def recordings(speech_cache: SpeechCache) -> list[bytes]:
    """Different speech with different timing, so the streams' states differ at every window."""
    texts = [PHRASES["capital"], PHRASES["weather"], PHRASES["hello"]]
    leads = [0.3, 0.9, 1.4]
    return [
        speech_cache.utterance(t, RATE, lead_silence_s=lead, trail_silence_s=1.0)
        for t, lead in zip(texts, leads, strict=True)
    ]


def alone(vad: SileroVAD, pcm: bytes, chunk: int = FRAME) -> list[VADEvent]:
    stream = vad.stream()
    events: list[VADEvent] = []
    for i in range(0, len(pcm), chunk):
        events += stream.feed(pcm[i : i + chunk], RATE)
    return events


def assert_same_turns(got: list[VADEvent], want: list[VADEvent]) -> None:
    """Batched float maths may move a probability by ~1e-6, never a decision by a window."""
    assert [type(e) for e in got] == [type(e) for e in want]
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_run_windows_matches_one_stream_at_a_time(vad: SileroVAD, recordings: list[bytes]) -> None:
    want = [alone(vad, pcm) for pcm in recordings]
    assert all(any(isinstance(e, SpeechStopped) for e in w) for w in want)
    streams = [vad.stream() for _ in recordings]
    got: list[list[VADEvent]] = [[] for _ in recordings]
    longest = max(len(p) for p in recordings)
    # Uneven pushes: stream k gets (k+1) frames per round, so batches mix streams with
    # different numbers of waiting windows.
    offsets = [0] * len(recordings)
    while any(off < longest for off in offsets):
        pushed: list[VADStream] = []
        for k, pcm in enumerate(recordings):
            chunk = pcm[offsets[k] : offsets[k] + (k + 1) * FRAME]
            offsets[k] += (k + 1) * FRAME
            if chunk:
                streams[k].push(chunk, RATE)
                pushed.append(streams[k])
        for stream, events in zip(pushed, run_windows(vad.session, pushed), strict=True):
            got[streams.index(stream)] += events
    for g, w in zip(got, want, strict=True):
        assert_same_turns(g, w)


async def test_batcher_serves_concurrent_sessions(vad: SileroVAD, recordings: list[bytes]) -> None:
    want = [alone(vad, pcm) for pcm in recordings]
    batcher = VADBatcher(vad)

    async def session(pcm: bytes) -> list[VADEvent]:
        stream = vad.stream()
        events: list[VADEvent] = []
        for i in range(0, len(pcm), FRAME):
            events += await batcher.feed(stream, pcm[i : i + FRAME], RATE)
            await asyncio.sleep(0)  # a receive loop yields between messages
        return events

    got = await asyncio.gather(*(session(pcm) for pcm in recordings))
    for g, w in zip(got, want, strict=True):
        assert_same_turns(g, w)
    # The sessions' windows shared model calls.
    assert batcher.batches < batcher.windows
    assert any(isinstance(e, SpeechStarted) for e in got[0])


async def test_a_stream_fed_twice_at_once_is_refused(vad: SileroVAD, recordings: list[bytes]) -> None:
    batcher = VADBatcher(vad)
    stream = vad.stream()
    window = recordings[0][: 3 * FRAME]
    first = asyncio.ensure_future(batcher.feed(stream, window, RATE))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="two tasks"):
        await batcher.feed(stream, window, RATE)
    assert await first == []


async def test_a_cancelled_session_does_not_break_the_batch(vad: SileroVAD, recordings: list[bytes]) -> None:
    batcher = VADBatcher(vad)
    leaving, staying = vad.stream(), vad.stream()
    gone = asyncio.ensure_future(batcher.feed(leaving, recordings[0][: 5 * FRAME], RATE))
    kept = asyncio.ensure_future(batcher.feed(staying, recordings[1][: 5 * FRAME], RATE))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == []  # silence-led audio: judged, no event
    assert staying.ready_windows == 0
