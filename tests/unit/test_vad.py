"""Tests for serve_app.engine.audio.vad on real speech (Piper) and the real Silero VAD model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serve_app.engine.audio.pcm import read_wav
from serve_app.engine.audio.vad import (
    SileroVAD,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    VADEvent,
    VADParams,
    VADStream,
    _shared_session,
)
from tests.conftest import PHRASES, SpeechCache, package_file

RATE = 24000
BYTES_PER_MS = RATE * 2 // 1000
WINDOW_MS = 32

MakeUtterance = Callable[..., bytes]


@pytest.fixture(scope="module")
def vad(silero_model_path: Path) -> SileroVAD:
    return SileroVAD(silero_model_path)


def feed_chunked(stream: VADStream, pcm: bytes, chunk_ms: float, rate: int = RATE) -> list[VADEvent]:
    step = max(2, int(chunk_ms * rate / 1000) * 2)
    events: list[VADEvent] = []
    for i in range(0, len(pcm), step):
        events += stream.feed(pcm[i : i + step], rate)
    return events


def kinds(events: list[VADEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def turns(events: list[VADEvent]) -> list[VADEvent]:
    """Only the started/stopped events (pause hints may also appear inside a phrase)."""
    return [e for e in events if isinstance(e, (SpeechStarted, SpeechStopped))]


def speech_ms(speech_cache: SpeechCache, text: str) -> float:
    return len(speech_cache.utterance(text, lead_silence_s=0, trail_silence_s=0)) / BYTES_PER_MS


def test_model_contract_is_silero_v5(silero_model_path: Path) -> None:
    session = _shared_session(str(silero_model_path))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert set(inputs) == {"input", "state", "sr"}
    assert inputs["state"][0] == 2 and inputs["state"][2] == 128


def test_single_utterance_start_pause_stop(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    text = PHRASES["capital"]
    audio = speech_cache.utterance(text, RATE, lead_silence_s=0.8, trail_silence_s=1.5)
    end_ms = 800 + speech_ms(speech_cache, text)
    stream = vad.stream()
    events = feed_chunked(stream, audio, 20)
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    started, paused, stopped = events
    assert isinstance(started, SpeechStarted)
    assert abs(started.speech_start_ms - 800) <= 100
    assert started.audio_start_ms == started.speech_start_ms - 300  # default prefix padding
    assert isinstance(stopped, SpeechStopped)
    assert end_ms - 50 <= stopped.speech_end_ms <= end_ms + 200  # Silero lags the end a little
    assert 500 <= stopped.audio_end_ms - stopped.speech_end_ms < 500 + WINDOW_MS
    assert isinstance(paused, SpeechPaused)
    assert paused.speech_end_ms == stopped.speech_end_ms
    assert 200 <= paused.audio_end_ms - paused.speech_end_ms < 200 + WINDOW_MS
    assert not stream.speaking
    assert stream.stream_ms == pytest.approx(len(audio) / BYTES_PER_MS)
    assert stream.stream_ms - WINDOW_MS - 10 <= stream.processed_ms <= stream.stream_ms
    assert stream.probability < 0.2


def test_question_fixture_prefix_padding_clamped_at_zero(vad: SileroVAD, question_wav: Path) -> None:
    pcm, rate = read_wav(question_wav)
    stream = vad.stream(VADParams(prefix_padding_ms=500))
    events = feed_chunked(stream, pcm, 20, rate)
    assert kinds(turns(events)) == ["SpeechStarted", "SpeechStopped"]
    assert isinstance(events[0], SpeechStarted)
    assert abs(events[0].speech_start_ms - 300) <= 100
    assert events[0].audio_start_ms == 0


def test_silence_gives_no_events(vad: SileroVAD) -> None:
    stream = vad.stream()
    assert feed_chunked(stream, bytes(5 * RATE * 2), 20) == []
    assert stream.probability < 0.1
    assert not stream.speaking


@pytest.mark.parametrize("dbfs", [-50.0, -40.0])
def test_low_white_noise_gives_no_events(vad: SileroVAD, dbfs: float) -> None:
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(5 * RATE) * (32768 * 10 ** (dbfs / 20))
    events = feed_chunked(vad.stream(), noise.astype("<i2").tobytes(), 20)
    assert events == []


def test_two_utterances_give_two_turns(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    first = speech_cache.utterance(PHRASES["capital"], RATE, 0.5, 1.0)
    second = speech_cache.utterance(PHRASES["hello"], RATE, 0.0, 1.0)
    events = turns(feed_chunked(vad.stream(), first + second, 20))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"] * 2
    second_onset = len(first) / BYTES_PER_MS
    assert isinstance(events[2], SpeechStarted)
    assert abs(events[2].speech_start_ms - second_onset) <= 100
    assert events[1].audio_end_ms < events[2].speech_start_ms


def test_prefix_padding_does_not_reach_into_the_previous_turn(
    vad: SileroVAD, speech_cache: SpeechCache
) -> None:
    audio = speech_cache.utterance(PHRASES["hello"], RATE, 0.5, 0.7) + speech_cache.utterance(
        PHRASES["capital"], RATE, 0.0, 1.0
    )
    events = turns(feed_chunked(vad.stream(), audio, 20))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"] * 2
    stop, start = events[1], events[2]
    assert isinstance(stop, SpeechStopped) and isinstance(start, SpeechStarted)
    assert start.speech_start_ms - 300 < stop.audio_end_ms  # the padding would overlap...
    assert start.audio_start_ms == stop.audio_end_ms  # ...so it is clamped


def test_short_gap_pauses_and_resumes(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    # A 400 ms gap is longer than the 200 ms pause hint and shorter than the 500 ms stop.
    audio = speech_cache.utterance(PHRASES["hello"], RATE, 0.5, 0.4) + speech_cache.utterance(
        PHRASES["capital"], RATE, 0.0, 1.0
    )
    events = feed_chunked(vad.stream(), audio, 20)
    assert kinds(events) == [
        "SpeechStarted",
        "SpeechPaused",
        "SpeechResumed",
        "SpeechPaused",
        "SpeechStopped",
    ]
    resumed = events[2]
    assert isinstance(resumed, SpeechResumed)
    gap_end = len(speech_cache.utterance(PHRASES["hello"], RATE, 0.5, 0.4)) / BYTES_PER_MS
    assert abs(resumed.audio_ms - gap_end) <= 100


def test_pause_hint_can_be_disabled(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    audio = speech_cache.utterance(PHRASES["capital"], RATE, 0.5, 1.0)
    events = feed_chunked(vad.stream(VADParams(pause_ms=0)), audio, 20)
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"]


def test_silence_duration_change_takes_effect_mid_stream(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    first = speech_cache.utterance(PHRASES["hello"], RATE, 0.5, 1.0)
    second = speech_cache.utterance(PHRASES["capital"], RATE, 0.0, 1.5)
    stream = vad.stream()
    assert kinds(turns(feed_chunked(stream, first + second, 20))) == ["SpeechStarted", "SpeechStopped"] * 2

    # With 1.2 s of required silence, the 1 s gap no longer ends the turn.
    stream = vad.stream()
    events = feed_chunked(stream, first[: len(first) // 2], 20)
    stream.configure(silence_duration_ms=1200)
    events += feed_chunked(stream, first[len(first) // 2 :] + second, 20)
    assert kinds(turns(events)) == ["SpeechStarted", "SpeechStopped"]
    assert stream.params.silence_duration_ms == 1200

    # And a short one, set during the trailing silence, ends it at once.
    stream = vad.stream(VADParams(silence_duration_ms=2000))
    events = feed_chunked(stream, first[: len(first) - 600 * BYTES_PER_MS], 20)
    assert kinds(turns(events)) == ["SpeechStarted"]
    stream.configure(VADParams(silence_duration_ms=200))
    events = feed_chunked(stream, bytes(2 * BYTES_PER_MS * WINDOW_MS), 20)
    assert kinds(events) == ["SpeechStopped"]


def test_threshold_change_takes_effect(vad: SileroVAD) -> None:
    window_of_silence = bytes(WINDOW_MS * BYTES_PER_MS)
    stream = vad.stream()
    assert feed_chunked(stream, bytes(RATE * 2), 20) == []
    judged_ms = stream.processed_ms
    stream.configure(threshold=0.0)  # every window now counts as speech
    events = stream.feed(window_of_silence * 2)
    assert kinds(events) == ["SpeechStarted"]
    assert isinstance(events[0], SpeechStarted)
    assert events[0].speech_start_ms == judged_ms  # the very next window


def times(event: VADEvent) -> list[int]:
    return [getattr(event, name) for name in event.__slots__]


def assert_same_events(got: list[VADEvent], want: list[VADEvent]) -> None:
    """Same kinds in the same order, every time within one 32 ms window."""
    assert kinds(got) == kinds(want)
    for g, w in zip(got, want, strict=True):
        assert np.abs(np.subtract(times(g), times(w))).max() <= WINDOW_MS, (g, w)


@pytest.mark.parametrize("chunk_ms", [7, 20, 333])
def test_chunk_size_does_not_change_events(vad: SileroVAD, speech_cache: SpeechCache, chunk_ms: int) -> None:
    audio = speech_cache.utterance(PHRASES["weather"], RATE, 0.4, 0.8) + speech_cache.utterance(
        PHRASES["hello"], RATE, 0.0, 1.0
    )
    reference = vad.stream().feed(audio)
    assert len(turns(reference)) == 4
    assert_same_events(feed_chunked(vad.stream(), audio, chunk_ms), reference)


def test_odd_byte_chunks_and_other_rates(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    audio = speech_cache.utterance(PHRASES["capital"], RATE, 0.5, 1.0)
    reference = feed_chunked(vad.stream(), audio, 20)
    stream = vad.stream()
    assert_same_events(
        [e for i in range(0, len(audio), 999) for e in stream.feed(audio[i : i + 999])], reference
    )
    for rate in (16000, 48000):
        other = speech_cache.utterance(PHRASES["capital"], rate, 0.5, 1.0)
        assert_same_events(feed_chunked(vad.stream(), other, 20, rate), reference)


def test_input_rate_change_mid_stream_keeps_the_timeline(vad: SileroVAD, speech_cache: SpeechCache) -> None:
    stream = vad.stream()
    assert feed_chunked(stream, bytes(16000), 20, 16000) == []  # 0.5 s at 16 kHz
    events = feed_chunked(stream, speech_cache.utterance(PHRASES["capital"], RATE, 0.5, 1.0), 20)
    assert kinds(turns(events)) == ["SpeechStarted", "SpeechStopped"]
    assert abs(times(events[0])[1] - 1000) <= 100
    assert stream.stream_ms == pytest.approx(
        500 + len(speech_cache.utterance(PHRASES["capital"])) / BYTES_PER_MS
    )


def test_streams_share_the_model_but_not_state(
    vad: SileroVAD, silero_model_path: Path, make_utterance: MakeUtterance
) -> None:
    assert SileroVAD(silero_model_path)._session is vad._session
    speech_audio = make_utterance(PHRASES["capital"], RATE, 0.5, 1.0)
    silence = bytes(len(speech_audio))
    a, b = vad.stream(), vad.stream()
    events_a: list[VADEvent] = []
    events_b: list[VADEvent] = []
    step = 20 * BYTES_PER_MS
    for i in range(0, len(speech_audio), step):
        events_a += a.feed(speech_audio[i : i + step])
        events_b += b.feed(silence[i : i + step])
    assert events_b == []
    assert events_a == feed_chunked(vad.stream(), speech_audio, 20)


def test_reset_drops_the_turn_and_keeps_the_time_base(vad: SileroVAD, make_utterance: MakeUtterance) -> None:
    audio = make_utterance(PHRASES["capital"], RATE, 0.5, 1.0)
    stream = vad.stream()
    half = audio[: len(audio) // 2 // 2 * 2]
    assert kinds(feed_chunked(stream, half, 20)) == ["SpeechStarted"]
    stream.reset()
    assert not stream.speaking
    reset_ms = len(half) / BYTES_PER_MS
    assert stream.processed_ms == pytest.approx(reset_ms, abs=1)
    events = turns(feed_chunked(stream, make_utterance(PHRASES["capital"], RATE, 0.2, 1.0), 20))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"]
    assert isinstance(events[0], SpeechStarted)
    assert abs(events[0].speech_start_ms - (reset_ms + 200)) <= 100
    assert events[0].audio_start_ms == pytest.approx(reset_ms, abs=1)  # clamped at the reset
    assert stream.stream_ms == pytest.approx(reset_ms + len(audio) / BYTES_PER_MS - 300, abs=1)


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        VADParams(threshold=1.5)
    with pytest.raises(ValueError):
        VADParams(silence_duration_ms=-1)
    assert VADParams(silence_duration_ms=300).effective_pause_ms == 150
    assert VADParams(silence_duration_ms=1000).effective_pause_ms == 200
    assert VADParams(pause_ms=50).effective_pause_ms == 50


def test_rejects_a_model_that_is_not_silero_v5() -> None:
    # The LSTM export beside it in the package takes (input, h, c), not (input, state, sr).
    with pytest.raises(ValueError, match="not a Silero v5"):
        SileroVAD(package_file("silero_vad", "data", "silero_vad_16k_sequence.onnx"))


def test_cost_per_window(vad: SileroVAD, make_utterance: MakeUtterance) -> None:
    audio = make_utterance(PHRASES["weather"], RATE, 0.5, 0.5)
    stream = vad.stream()
    step = 20 * BYTES_PER_MS
    start = time.perf_counter()
    for i in range(0, len(audio), step):
        stream.feed(audio[i : i + step])
    elapsed = time.perf_counter() - start
    windows = stream.processed_ms / WINDOW_MS
    print(
        f"\nVAD cost: {elapsed / windows * 1e3:.3f} ms per 32 ms window ({windows:.0f} windows, 20 ms feeds)"
    )
    assert windows > 0


def test_a_directory_holding_the_model_is_accepted(silero_model_path: Path, tmp_path: Path) -> None:
    nested = tmp_path / "snapshot" / "files"
    nested.mkdir(parents=True)
    (nested / "silero_vad.onnx").write_bytes(Path(silero_model_path).read_bytes())
    assert SileroVAD(tmp_path / "snapshot").model_path == str(nested / "silero_vad.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no silero_vad\.onnx"):
        SileroVAD(empty)
