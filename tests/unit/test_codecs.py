"""Decoding client audio: raw frames, WAV files arriving in pieces, compressed files."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from serve_app.engine.audio.codecs import ALAW, MULAW, AudioFormatError, WavStream, decode_file, decode_raw


def tone(rate: int = 16_000, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((samples * 32767).astype("<i2").tobytes())
        else:
            w.writeframes((samples * 127 + 128).astype(np.uint8).tobytes())
    return out.getvalue()


def test_raw_encodings_decode_to_pcm16() -> None:
    assert decode_raw(b"\x01\x00\x02\x00", "pcm_s16le") == b"\x01\x00\x02\x00"
    floats = np.array([0.0, 0.5, -2.0, np.nan], dtype="<f4").tobytes()
    assert np.frombuffer(decode_raw(floats, "pcm_f32le"), "<i2").tolist() == [0, 16383, -32767, 0]
    assert np.frombuffer(decode_raw(bytes([0xFF, 0x7F]), "mulaw"), "<i2").tolist() == [0, 0]
    with pytest.raises(AudioFormatError, match="whole number"):
        decode_raw(b"\x00\x00\x00", "pcm_s16le")


def test_g711_tables_are_symmetric_and_span_the_range() -> None:
    assert MULAW.max() > 30_000 and MULAW.min() < -30_000
    assert ALAW.max() > 30_000 and ALAW.min() < -30_000
    assert sorted(MULAW.tolist()) == sorted((-MULAW).tolist())


@pytest.mark.parametrize("piece", [1, 7, 44, 4096])
def test_a_wav_file_in_pieces_decodes_to_the_same_audio_whole(piece: int) -> None:
    samples = tone()
    data = wav_bytes(samples, 16_000)
    stream = WavStream()
    out = b"".join(stream.feed(data[i : i + piece]) for i in range(0, len(data), piece))
    assert stream.sample_rate == 16_000
    assert out == (samples * 32767).astype("<i2").tobytes()


def test_stereo_8_bit_wav_is_mixed_to_mono_at_its_rate() -> None:
    samples = np.repeat(tone(rate=8000), 2)  # both channels the same
    stream = WavStream()
    out = np.frombuffer(stream.feed(wav_bytes(samples, 8000, channels=2, width=1)), "<i2")
    assert stream.sample_rate == 8000
    assert out.size == samples.size // 2
    assert np.abs(out.astype(np.float32) / 32768 - tone(rate=8000)).max() < 0.02


def test_not_a_wav_and_unknown_encodings_are_refused() -> None:
    with pytest.raises(AudioFormatError, match="not a WAV"):
        WavStream().feed(b"ID3\x04" + bytes(20))
    fmt = struct.pack("<HHIIHH", 85, 1, 16000, 32000, 2, 16)  # format 85: MP3 inside WAV
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    with pytest.raises(AudioFormatError, match="Unsupported WAV encoding"):
        WavStream().feed(header + b"data" + struct.pack("<I", 0))


def test_compressed_files_decode_through_ffmpeg() -> None:
    import av

    samples = tone(rate=44_100, seconds=1.0)
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=44_100, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = 44_100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    pcm = np.frombuffer(decode_file(out.getvalue(), 16_000), "<i2")
    assert abs(pcm.size - 16_000) < 400
    assert np.abs(pcm).max() > 12_000
    with pytest.raises(AudioFormatError, match="could not be decoded"):
        decode_file(b"definitely not audio" * 10)
