"""PCM16 helpers: conversion, resampling (one-shot and streaming), WAV files, base64.

All audio in voxray is mono, 16-bit signed little-endian PCM ("PCM16"), the format of the
OpenAI Realtime API's ``pcm16`` audio. Rates differ per hop (client 24 kHz, ASR and VAD
16 kHz, Piper 22.05 kHz), so resampling lives here, on libsoxr.
"""

from __future__ import annotations

import base64
import binascii
import wave
from pathlib import Path

import numpy as np
import soxr

_INT16_SCALE = 32768.0


def pcm16_to_float32(b: bytes, out: np.ndarray | None = None) -> np.ndarray:
    """Convert PCM16 bytes to float32 samples in [-1, 1).

    Args:
        b: Mono PCM16 little-endian bytes (an odd trailing byte is ignored).
        out: Optional preallocated float32 array of exactly ``len(b) // 2`` samples to fill,
            for hot paths that want to avoid an allocation per call.

    Returns:
        The float32 samples (``out`` when given).
    """
    ints = np.frombuffer(b, dtype="<i2", count=len(b) // 2)
    if out is None:
        return ints.astype(np.float32) / _INT16_SCALE
    np.multiply(ints, 1.0 / _INT16_SCALE, out=out, casting="unsafe")
    return out


def float32_to_pcm16(a: np.ndarray) -> bytes:
    """Convert float samples in [-1, 1] to PCM16 bytes, clipping out-of-range values.

    Args:
        a: 1-D float array.

    Returns:
        Mono PCM16 little-endian bytes.
    """
    scaled = np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.rint(scaled).astype("<i2").tobytes()


def _as_int16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole mono PCM16 buffer.

    Args:
        pcm: Mono PCM16 bytes.
        src_rate: Rate of ``pcm`` in Hz.
        dst_rate: Wanted rate in Hz.

    Returns:
        PCM16 bytes at ``dst_rate`` (``pcm`` itself when the rates are equal).
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate or not pcm:
        return pcm
    out = soxr.resample(_as_int16(pcm), src_rate, dst_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype="<i2").tobytes()


class StreamResampler:
    """Chunk-by-chunk PCM16 resampler that keeps filter state between chunks.

    Resampling each chunk on its own restarts the filter at every boundary, which clicks;
    soxr's streaming resampler carries the state across. Output lags input by the
    filter's delay; ``flush`` returns the tail at the end of the stream.

    Args:
        src_rate: Input rate in Hz.
        dst_rate: Output rate in Hz.
        quality: soxr quality (``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``).
    """

    def __init__(self, src_rate: int, dst_rate: int, quality: str = "HQ") -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._quality = quality
        self._odd = b""  # a PCM16 sample split across two chunks
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.src_rate == self.dst_rate:
            return None
        return soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="int16", quality=self._quality)

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk of the stream.

        Args:
            pcm: Mono PCM16 bytes of any length (an odd byte is kept for the next call).

        Returns:
            Whatever output the resampler can produce so far (may be empty).
        """
        if self._odd:
            pcm = self._odd + pcm
        if len(pcm) % 2:
            pcm, self._odd = pcm[:-1], pcm[-1:]
        else:
            self._odd = b""
        if self._stream is None:
            return pcm
        if not pcm:
            return b""
        return self._stream.resample_chunk(_as_int16(pcm)).tobytes()

    def flush(self) -> bytes:
        """End the stream: return the buffered tail and make the resampler reusable."""
        self._odd = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).tobytes()
        self._stream = self._new_stream()
        return tail

    def reset(self) -> None:
        """Drop all buffered input and filter state without producing output."""
        self._odd = b""
        self._stream = self._new_stream()


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV file as mono PCM16.

    Args:
        path: The WAV file.

    Returns:
        ``(pcm16 mono bytes, sample rate)``; multi-channel audio is averaged to mono.

    Raises:
        ValueError: The file is not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        if width != 2:
            raise ValueError(
                f"{path}: only 16-bit PCM WAV is supported, this file has {8 * width}-bit samples"
            )
        frames = w.readframes(w.getnframes())
    if channels == 1:
        return frames, rate
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
    mono = np.rint(samples.mean(axis=1)).astype("<i2")
    return mono.tobytes(), rate


def write_wav(path: str | Path, pcm16: bytes, rate: int) -> None:
    """Write mono PCM16 bytes as a WAV file.

    Args:
        path: Destination file.
        pcm16: Mono PCM16 bytes.
        rate: Sample rate in Hz.
    """
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def duration_s(pcm: bytes, rate: int) -> float:
    """Length in seconds of mono PCM16 bytes at ``rate``."""
    return len(pcm) / 2 / rate


def b64encode_audio(pcm: bytes) -> str:
    """Base64-encode audio bytes for a Realtime API event."""
    return base64.b64encode(pcm).decode("ascii")


def b64decode_audio(data: str) -> bytes:
    """Decode base64 audio from a Realtime API event.

    Raises:
        ValueError: ``data`` is not valid base64.
    """
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"audio is not valid base64: {e}") from None


def trim_silence(pcm16: bytes, rate: int, frame_ms: int = 10, rel_db: float = -40.0) -> bytes:
    """Cut leading and trailing frames quieter than ``rel_db`` below the loudest frame."""
    a = np.frombuffer(pcm16, dtype="<i2")
    frame = rate * frame_ms // 1000
    n = len(a) // frame
    if n == 0:
        return pcm16
    rms = np.sqrt((a[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (rel_db / 20))
    if not len(active):
        return b""
    return a[active[0] * frame : (active[-1] + 1) * frame].tobytes()
