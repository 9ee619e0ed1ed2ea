"""Riva TTS output audio: the request's encoding and rate, made from the TTS's PCM16 chunks.

Riva returns raw samples without a header: ``LINEAR_PCM`` (16-bit little-endian), ``MULAW``
or ``ALAW`` (G.711, one byte a sample), at the request's ``sample_rate_hz``. The TTS
deployment streams PCM16 at its voice's own rate, so every stream is resampled with filter
state carried across chunks (:class:`~serve_app.engine.audio.pcm.StreamResampler`) and then
encoded (G.711 with ``engine.audio.codecs``' encoders: each sample gets the code that decodes
nearest).
"""

from __future__ import annotations

from serve_app.engine.audio.codecs import ALAW_ENCODE, MULAW_ENCODE, encode_g711
from serve_app.engine.audio.pcm import StreamResampler
from serve_app.protocols.grpc_api.proto import riva_audio_pb2
from serve_app.protocols.grpc_api.status import invalid_argument

Encoding = riva_audio_pb2.AudioEncoding

MIN_RATE_HZ = 8_000
"""The proto's own floor: "sample rate values below 8kHz will not produce any meaningful output"."""
MAX_RATE_HZ = 96_000
"""Beyond studio rates upsampling only inflates the audio (the proto's note on upsampling)."""

SUPPORTED_ENCODINGS = ("LINEAR_PCM", "MULAW", "ALAW")
_G711_TABLES = {Encoding.MULAW: MULAW_ENCODE, Encoding.ALAW: ALAW_ENCODE}


def output_encoding(encoding: int) -> int:
    """The encoding a request asks for; unset (0) is ``LINEAR_PCM``, as Riva's own clients default.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for FLAC, OGGOPUS or an unknown value.
    """
    if encoding == Encoding.ENCODING_UNSPECIFIED:
        return Encoding.LINEAR_PCM
    if encoding in (Encoding.LINEAR_PCM, Encoding.MULAW, Encoding.ALAW):
        return encoding
    name = Encoding.Name(encoding) if encoding in Encoding.values() else str(encoding)
    raise invalid_argument(
        f"encoding {name} is not supported for synthesis; use one of {', '.join(SUPPORTED_ENCODINGS)} "
        "(raw samples without a header)."
    )


def output_rate(sample_rate_hz: int) -> int | None:
    """The rate a request asks for; ``None`` (for 0) keeps the voice's own rate.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` outside 8000 to 96000 Hz.
    """
    if sample_rate_hz == 0:
        return None
    if not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ:
        raise invalid_argument(
            f"sample_rate_hz {sample_rate_hz} is out of range; use {MIN_RATE_HZ} to {MAX_RATE_HZ} "
            "(e.g. 16000, 22050, 44100), or 0 for the voice's own rate."
        )
    return sample_rate_hz


class AudioEncoder:
    """Turns one stream of TTS chunks into the request's encoding and rate.

    Args:
        encoding: ``LINEAR_PCM``, ``MULAW`` or ``ALAW`` (see :func:`output_encoding`).
        rate: The output rate, or ``None`` for the rate of the first chunk.
    """

    def __init__(self, encoding: int, rate: int | None) -> None:
        self.encoding = encoding
        self.rate = rate
        self._resampler: StreamResampler | None = None

    def feed(self, pcm16: bytes, sample_rate: int) -> bytes:
        """Encode the next chunk (may return less, or nothing, while the resampler fills)."""
        tail = b""
        if self._resampler is not None and self._resampler.src_rate != sample_rate:
            tail = self._resampler.flush()  # a backend that changed rate mid-stream: start over
            self._resampler = None
        if self._resampler is None:
            self.rate = self.rate or sample_rate
            self._resampler = StreamResampler(sample_rate, self.rate)
        return self._encode(tail + self._resampler.process(pcm16))

    def flush(self) -> bytes:
        """The stream ended: the resampler's buffered tail, encoded."""
        if self._resampler is None:
            return b""
        return self._encode(self._resampler.flush())

    def _encode(self, pcm16: bytes) -> bytes:
        table = _G711_TABLES.get(self.encoding)
        return pcm16 if table is None else encode_g711(pcm16, table)
