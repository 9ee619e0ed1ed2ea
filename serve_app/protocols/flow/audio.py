"""Flow audio both ways: decoding what clients send, framing what voxray sends back.

Clients send raw mono audio as ``pcm_s16le``, ``pcm_f32le`` or ``mulaw`` at any rate; the
engine takes PCM16 at the client's rate. Reply audio goes out as pcm_s16le 16 kHz in binary
frames that are each a multiple of 256 bytes: the ``speechmatics-flow`` client plays in
256-byte pieces and spins forever on a frame that does not divide evenly.
"""

from __future__ import annotations

from serve_app.engine.audio.codecs import AudioFormatError, decode_raw
from serve_app.protocols.flow.messages import Encoding, FlowProtocolError

OUTPUT_RATE = 16_000
FRAME_UNIT = 256  # bytes: every outgoing frame is a multiple of this
MAX_FRAME_BYTES = 32 * FRAME_UNIT  # 256 ms of 16 kHz PCM16


def decode_audio(data: bytes, encoding: Encoding) -> bytes:
    """One client frame as PCM16 mono at the same rate.

    Raises:
        FlowProtocolError: The byte count is not a whole number of samples.
    """
    try:
        return decode_raw(data, encoding)
    except AudioFormatError as exc:
        raise FlowProtocolError(str(exc)) from None


class FrameWriter:
    """Cuts reply audio into frames of whole 256-byte units, padding only the last one.

    Audio goes out as soon as a whole unit is there (a remainder under 256 bytes, 8 ms,
    waits for the next chunk), in frames of at most ``max_frame_bytes``.

    Args:
        max_frame_bytes: The largest frame (a multiple of 256).
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_frame_bytes % FRAME_UNIT or max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be a positive multiple of {FRAME_UNIT}")
        self._max = max_frame_bytes
        self._pending = bytearray()

    def push(self, pcm16: bytes) -> list[bytes]:
        """Add audio; returns the frames ready now (every whole unit)."""
        self._pending += pcm16
        ready = len(self._pending) - len(self._pending) % FRAME_UNIT
        frames = [bytes(self._pending[i : min(i + self._max, ready)]) for i in range(0, ready, self._max)]
        del self._pending[:ready]
        return frames

    def flush(self) -> list[bytes]:
        """The rest, padded with silence to one whole 256-byte unit (or nothing)."""
        if not self._pending:
            return []
        frame = bytes(self._pending) + b"\x00" * (FRAME_UNIT - len(self._pending))
        self._pending.clear()
        return [frame]
