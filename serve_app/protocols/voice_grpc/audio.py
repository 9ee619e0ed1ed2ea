"""Audio formats of the gRPC voice streams: rates, languages, input decoding, G.711 output.

Clients of both voice streams declare a sample rate (0 means 16 kHz) and send audio in
protobuf ``bytes`` fields; voxray's own stream may also use G.711 (mu-law or A-law) either
way. The engine takes and gives PCM16 at the client's rates (it resamples for its models),
so this module only checks what the client declared, turns each chunk into PCM16 and
encodes the reply's PCM16 back into the client's encoding.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from serve_app.engine.audio.codecs import ALAW, ALAW_ENCODE, MULAW, MULAW_ENCODE, encode_g711
from serve_app.protocols.grpc_api.status import invalid_argument

Encoding = Literal["pcm16", "mulaw", "alaw"]

DEFAULT_RATE = 16_000
MIN_RATE = 8_000
MAX_RATE = 192_000
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_TABLES = {"mulaw": MULAW, "alaw": ALAW}
_ENCODERS = {"mulaw": MULAW_ENCODE, "alaw": ALAW_ENCODE}


def sample_rate(value: int, field: str, default: int = DEFAULT_RATE) -> int:
    """The declared rate in Hz (0 takes ``default``).

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` outside 8000 to 192000 Hz.
    """
    if value == 0:
        return default
    if not MIN_RATE <= value <= MAX_RATE:
        raise invalid_argument(
            f"{field} {value} is out of range: send {MIN_RATE} to {MAX_RATE} Hz (0 means {DEFAULT_RATE})."
        )
    return value


def asr_language(code: str, field: str) -> str | None:
    """The ASR language of a BCP-47 tag (``en-US`` → ``en``); ``None`` for an empty one.

    The models take ISO 639-1 codes; the region of a tag changes nothing for them.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for something that is not a language tag.
    """
    if not code:
        return None
    if not _LANGUAGE.fullmatch(code) or len(code) > 35:
        raise invalid_argument(f"{field} {code[:40]!r} is not a language tag; send e.g. 'en-US' or 'en'.")
    return re.split(r"[-_]", code)[0].lower()


class InputAudio:
    """Turns a client's audio chunks into PCM16 mono at the client's rate.

    A PCM16 sample split across two messages is joined again (a byte stream cut anywhere
    is still valid audio), so no chunk is refused for its length.

    Args:
        encoding: What the client sends.
    """

    def __init__(self, encoding: Encoding = "pcm16") -> None:
        self.encoding: Encoding = encoding
        self._odd = b""  # the first byte of a PCM16 sample whose second byte is still to come

    def decode(self, data: bytes) -> bytes:
        """The PCM16 of one chunk (empty while a chunk holds less than one sample)."""
        if self.encoding != "pcm16":
            return _TABLES[self.encoding][np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return data[:whole]


def encode(pcm16: bytes, encoding: Encoding) -> bytes:
    """PCM16 mono in ``encoding`` (PCM16 passes through; G.711 takes the nearest level)."""
    return pcm16 if encoding == "pcm16" else encode_g711(pcm16, _ENCODERS[encoding])
