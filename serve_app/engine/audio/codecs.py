"""Decoding what clients send into PCM16 mono: raw sample formats, WAV streams, audio files.

- Raw frames (``pcm_s16le``, ``pcm_f32le``, ``mulaw``) decode one frame at a time.
- A WAV file sent in pieces (the Speechmatics clients' default ``file`` format) decodes as it
  arrives: :class:`WavStream` reads the header, then turns each piece of the data chunk into
  PCM16 mono at the file's rate, so live transcription starts before the upload ends.
- Any other file (MP3, AAC, Ogg, FLAC, AMR, M4A/MP4, MPEG) is decoded whole with FFmpeg's
  libraries through PyAV (a faster-whisper dependency) once the client says it is complete.
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import numpy as np

RawEncoding = Literal["pcm_s16le", "pcm_f32le", "mulaw"]
SAMPLE_BYTES: dict[str, int] = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}


class AudioFormatError(ValueError):
    """Audio that cannot be decoded as declared; the message says why, for the client."""


def _mulaw_table() -> np.ndarray:
    """G.711 μ-law byte → linear PCM16 sample."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law byte → linear PCM16 sample."""
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


MULAW = _mulaw_table()
ALAW = _alaw_table()


def _encode_table(decode: np.ndarray) -> np.ndarray:
    """Every int16 sample (offset by 32768) -> the byte whose decoded value is nearest.

    Built from the decode table, so encoding and decoding agree by construction.
    """
    order = np.argsort(decode, kind="stable")
    levels = decode[order].astype(np.int32)
    samples = np.arange(-32768, 32768, dtype=np.int32)
    above = np.clip(np.searchsorted(levels, samples), 1, len(levels) - 1)
    below = above - 1
    return order[np.where(samples - levels[below] <= levels[above] - samples, below, above)].astype(np.uint8)


MULAW_ENCODE = _encode_table(MULAW)
ALAW_ENCODE = _encode_table(ALAW)


def encode_g711(pcm16: bytes, table: np.ndarray) -> bytes:
    """Mono PCM16 little-endian as G.711 bytes, one a sample (``table``: MULAW_ENCODE or ALAW_ENCODE)."""
    samples = np.frombuffer(pcm16, dtype="<i2", count=len(pcm16) // 2).astype(np.int32)
    return table[samples + 32768].tobytes()


def floats_to_pcm16(floats: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (NaN as silence, clipped) as PCM16 little-endian."""
    return (np.clip(np.nan_to_num(floats, nan=0.0), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def decode_raw(data: bytes, encoding: RawEncoding) -> bytes:
    """One frame of raw mono audio as PCM16 at the same rate.

    Raises:
        AudioFormatError: The byte count is not a whole number of samples.
    """
    width = SAMPLE_BYTES[encoding]
    if len(data) % width:
        raise AudioFormatError(
            f"An audio frame of {len(data)} bytes is not a whole number of {encoding} samples "
            f"({width} bytes each); send whole samples."
        )
    if encoding == "pcm_s16le":
        return data
    if encoding == "mulaw":
        return MULAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
    return floats_to_pcm16(np.frombuffer(data, dtype="<f4"))


_WAVE_PCM, _WAVE_FLOAT, _WAVE_ALAW, _WAVE_MULAW, _WAVE_EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_MAX_HEADER_BYTES = 1 << 20  # a RIFF header (with LIST/INFO chunks) longer than this is not audio


class WavStream:
    """Decodes a WAV file that arrives in pieces into PCM16 mono at the file's rate.

    Supports PCM (8, 16, 24 and 32 bit), 32/64-bit float, μ-law and A-law, any channel count
    (mixed down to mono), in plain or extensible format chunks.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self.sample_rate: int | None = None
        self._format = 0
        self._channels = 0
        self._width = 0
        self._carry = b""  # a partial sample frame left from the previous piece
        self._data_left: int | None = None

    @staticmethod
    def looks_like_wav(first: bytes) -> bool:
        """Whether a file's first bytes are a RIFF/WAVE header."""
        return len(first) >= 12 and first[:4] in (b"RIFF", b"RF64") and first[8:12] == b"WAVE"

    def feed(self, data: bytes) -> bytes:
        """The PCM16 mono audio this piece completes (empty while the header is incomplete).

        Raises:
            AudioFormatError: Not a WAV file, or an encoding this reader does not know.
        """
        if self.sample_rate is None:
            self._header += data
            data = self._parse_header()
            if self.sample_rate is None:
                return b""
        if self._data_left is not None:
            data = data[: self._data_left]
            self._data_left -= len(data)
        data = self._carry + data
        frame = self._width * self._channels
        cut = len(data) - len(data) % frame
        self._carry = data[cut:]
        return self._to_pcm16(data[:cut])

    def _parse_header(self) -> bytes:
        """Parse chunks until ``data``; returns the audio bytes after its header, if there."""
        header = bytes(self._header)
        if len(header) >= 12 and not self.looks_like_wav(header):
            raise AudioFormatError("The audio is not a WAV file (no RIFF/WAVE header).")
        pos = 12
        while len(header) >= pos + 8:
            chunk_id, size = header[pos : pos + 4], struct.unpack("<I", header[pos + 4 : pos + 8])[0]
            body = pos + 8
            if chunk_id == b"data":
                if not self._channels:
                    raise AudioFormatError("The WAV file has audio data before its 'fmt ' chunk.")
                # A streaming writer puts 0 or 0xFFFFFFFF here; then the data runs to the end.
                self._data_left = size if 0 < size < 0xFFFFFFFF else None
                self._header.clear()
                self.sample_rate = self._rate
                return header[body:]
            if len(header) < body + size + (size & 1):
                break  # the chunk is not all here yet
            if chunk_id == b"fmt ":
                self._read_format(header[body : body + size])
            pos = body + size + (size & 1)
        if len(header) > _MAX_HEADER_BYTES:
            raise AudioFormatError("The WAV file has no 'data' chunk in its first megabyte.")
        return b""

    def _read_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise AudioFormatError("The WAV file's 'fmt ' chunk is too short.")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID's first two bytes
        known = {_WAVE_PCM: (8, 16, 24, 32), _WAVE_FLOAT: (32, 64), _WAVE_ALAW: (8,), _WAVE_MULAW: (8,)}
        if tag not in known or bits not in known[tag] or channels < 1 or rate < 1:
            raise AudioFormatError(
                f"Unsupported WAV encoding (format {tag}, {bits} bits, {channels} channels, {rate} Hz); "
                "send PCM, float, μ-law or A-law WAV, or another file type."
            )
        self._format, self._channels, self._rate, self._width = tag, channels, rate, bits // 8

    def _to_pcm16(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._format in (_WAVE_ALAW, _WAVE_MULAW):
            table = ALAW if self._format == _WAVE_ALAW else MULAW
            samples = table[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0
        elif self._format == _WAVE_FLOAT:
            samples = np.frombuffer(data, dtype="<f4" if self._width == 4 else "<f8").astype(np.float32)
        elif self._width == 1:
            samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        elif self._width == 3:
            raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
            samples = ints.astype(np.float32) / 8388608.0
        else:
            dtype = "<i2" if self._width == 2 else "<i4"
            samples = np.frombuffer(data, dtype=dtype).astype(np.float32) / (2.0 ** (8 * self._width - 1))
        if self._channels > 1:
            samples = samples.reshape(-1, self._channels).mean(axis=1)
        if self._format == _WAVE_PCM and self._width == 2 and self._channels == 1:
            return data  # already what the engine takes
        return floats_to_pcm16(samples)


def decode_file(data: bytes, rate: int = 16_000) -> bytes:
    """A whole compressed audio file (MP3, AAC, Ogg, FLAC, …) as PCM16 mono at ``rate``.

    Raises:
        AudioFormatError: FFmpeg cannot read it as audio.
    """
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioFormatError("The file has no audio stream.")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            out = bytearray()
            for frame in container.decode(audio=0):
                for converted in resampler.resample(frame):
                    out += converted.to_ndarray().tobytes()
            for converted in resampler.resample(None):
                out += converted.to_ndarray().tobytes()
            return bytes(out)
    except AudioFormatError:
        raise
    except Exception as exc:  # PyAV raises its own error classes per FFmpeg error code
        raise AudioFormatError(f"The audio file could not be decoded: {exc}") from None
