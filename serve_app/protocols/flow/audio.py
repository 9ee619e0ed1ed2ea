"""Flow audio both ways: decoding what clients send, framing what voxray sends back.

Clients send raw mono audio as ``pcm_s16le``, ``pcm_f32le`` or ``mulaw`` at any rate; the
engine takes PCM16 at the client's rate. Reply audio goes out as pcm_s16le 16 kHz in binary
frames that are each a multiple of 256 bytes: the ``speechmatics-flow`` client plays in
256-byte pieces and spins forever on a frame that does not divide evenly.
"""

from __future__ import annotations

import numpy as np

from serve_app.protocols.flow.messages import Encoding, FlowProtocolError

OUTPUT_RATE = 16_000
FRAME_UNIT = 256  # bytes: every outgoing frame is a multiple of this
FRAME_BYTES = 10 * FRAME_UNIT  # 80 ms of 16 kHz PCM16: small enough to start playback quickly
SAMPLE_BYTES: dict[str, int] = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}


def _mulaw_table() -> np.ndarray:
    """G.711 μ-law byte → linear PCM16 sample."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


_MULAW = _mulaw_table()


def decode_audio(data: bytes, encoding: Encoding) -> bytes:
    """One client frame as PCM16 mono at the same rate.

    Raises:
        FlowProtocolError: The byte count is not a whole number of samples.
    """
    width = SAMPLE_BYTES[encoding]
    if len(data) % width:
        raise FlowProtocolError(
            f"An audio frame of {len(data)} bytes is not a whole number of {encoding} samples "
            f"({width} bytes each); send whole samples."
        )
    if encoding == "pcm_s16le":
        return data
    if encoding == "mulaw":
        return _MULAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
    floats = np.nan_to_num(np.frombuffer(data, dtype="<f4"), nan=0.0)
    return (np.clip(floats, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class FrameWriter:
    """Cuts reply audio into frames of whole 256-byte units, padding only the last one.

    Args:
        frame_bytes: The size of a full frame (a multiple of 256).
    """

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes % FRAME_UNIT:
            raise ValueError(f"frame_bytes must be a multiple of {FRAME_UNIT}")
        self._frame_bytes = frame_bytes
        self._pending = bytearray()

    def push(self, pcm16: bytes) -> list[bytes]:
        """Add audio; returns the full frames now ready."""
        self._pending += pcm16
        frames = []
        while len(self._pending) >= self._frame_bytes:
            frames.append(bytes(self._pending[: self._frame_bytes]))
            del self._pending[: self._frame_bytes]
        return frames

    def flush(self) -> list[bytes]:
        """The rest, padded with silence to a whole number of 256-byte units (or nothing)."""
        if not self._pending:
            return []
        padding = -len(self._pending) % FRAME_UNIT
        frame = bytes(self._pending) + b"\x00" * padding
        self._pending.clear()
        return [frame]
