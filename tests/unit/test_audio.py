"""Tests for serve_app.engine.audio.pcm: conversions, resampling, WAV files, base64."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from serve_app.engine.audio.pcm import (
    StreamResampler,
    b64decode_audio,
    b64encode_audio,
    duration_s,
    float32_to_pcm16,
    pcm16_to_float32,
    read_wav,
    resample_pcm16,
    write_wav,
)


def sine_pcm16(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return float32_to_pcm16(amplitude * np.sin(2 * np.pi * freq * t))


def peak_hz(pcm: bytes, rate: int) -> float:
    a = pcm16_to_float32(pcm)
    spectrum = np.abs(np.fft.rfft(a * np.hanning(len(a))))
    return float(np.fft.rfftfreq(len(a), 1 / rate)[np.argmax(spectrum)])


def test_pcm16_float32_round_trip() -> None:
    ints = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype="<i2")
    floats = pcm16_to_float32(ints.tobytes())
    assert floats.dtype == np.float32
    assert floats[3] == pytest.approx(0.5)
    assert floats[-1] == -1.0
    back = np.frombuffer(float32_to_pcm16(floats), dtype="<i2")
    assert np.abs(back.astype(int) - ints).max() <= 1


def test_pcm16_to_float32_fills_out_and_ignores_odd_byte() -> None:
    out = np.empty(2, dtype=np.float32)
    result = pcm16_to_float32(np.array([16384, -8192], dtype="<i2").tobytes() + b"\x01", out=out)
    assert result is out
    np.testing.assert_allclose(out, [0.5, -0.25])


def test_float32_to_pcm16_clips() -> None:
    ints = np.frombuffer(float32_to_pcm16(np.array([2.0, -3.0, 0.0])), dtype="<i2")
    assert ints.tolist() == [32767, -32767, 0]


def test_resample_identity_returns_input() -> None:
    pcm = sine_pcm16(440, 24000, 0.1)
    assert resample_pcm16(pcm, 24000, 24000) is pcm
    assert resample_pcm16(b"", 24000, 16000) == b""


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (22050, 24000), (16000, 48000)])
def test_resample_keeps_length_and_pitch(src: int, dst: int) -> None:
    out = resample_pcm16(sine_pcm16(440, src, 1.0), src, dst)
    assert abs(len(out) // 2 - dst) <= 2
    assert peak_hz(out, dst) == pytest.approx(440, abs=2)


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        resample_pcm16(b"\x00\x00", 0, 16000)


@pytest.mark.parametrize("chunk_bytes", [2, 337, 960, 7_000])
def test_stream_resampler_matches_one_shot(chunk_bytes: int) -> None:
    pcm = sine_pcm16(300, 24000, 0.5)
    r = StreamResampler(24000, 16000)
    out = b"".join(r.process(pcm[i : i + chunk_bytes]) for i in range(0, len(pcm), chunk_bytes))
    out += r.flush()
    whole = resample_pcm16(pcm, 24000, 16000)
    assert abs(len(out) - len(whole)) <= 4
    n = min(len(out), len(whole)) // 2
    a = np.frombuffer(out, dtype="<i2")[:n].astype(int)
    b = np.frombuffer(whole, dtype="<i2")[:n].astype(int)
    # Chunk boundaries leave no clicks: the streamed signal is the one-shot signal.
    assert np.abs(a - b).max() <= 8  # chunk-by-chunk one-shot resampling is off by > 100


def test_stream_resampler_is_reusable_after_flush_and_reset() -> None:
    pcm = sine_pcm16(300, 24000, 0.2)
    r = StreamResampler(24000, 16000)
    first = r.process(pcm) + r.flush()
    second = r.process(pcm) + r.flush()
    assert first == second
    r.process(pcm[:1001])
    r.reset()
    assert r.process(pcm) + r.flush() == first


def test_stream_resampler_identity_passes_through_whole_samples() -> None:
    r = StreamResampler(16000, 16000)
    assert r.process(b"\x01\x02\x03") == b"\x01\x02"
    assert r.process(b"\x04") == b"\x03\x04"
    assert r.flush() == b""


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = sine_pcm16(440, 24000, 0.25)
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 24000)
    assert read_wav(path) == (pcm, 24000)


def test_read_wav_downmixes_stereo(tmp_path: Path) -> None:
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([left, right], axis=1).tobytes())
    pcm, rate = read_wav(path)
    assert rate == 16000
    assert np.frombuffer(pcm, dtype="<i2").tolist() == [2000] * 100


def test_read_wav_rejects_8_bit(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(range(100)))
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(path)


def test_question_fixture_is_24k_speech_with_silence(question_wav: Path) -> None:
    pcm, rate = read_wav(question_wav)
    assert rate == 24000
    assert question_wav.stat().st_size < 250_000
    a = np.abs(np.frombuffer(pcm, dtype="<i2"))
    assert a[: int(0.29 * rate)].max() == 0  # 0.3 s of silence first
    assert a[-int(0.79 * rate) :].max() == 0  # 0.8 s after
    assert a.max() > 10_000


def test_duration_and_base64() -> None:
    pcm = bytes(48000)
    assert duration_s(pcm, 24000) == 1.0
    assert b64decode_audio(b64encode_audio(pcm)) == pcm
    with pytest.raises(ValueError, match="base64"):
        b64decode_audio("not base64!")
