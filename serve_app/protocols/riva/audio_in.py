"""Riva audio in: what a client sends, as PCM16 mono at the ASR rate (16 kHz).

What real Riva clients send (``docs: protocols README (c)``): NVIDIA's ``transcribe_file.py``
sends no encoding and no sample rate, and its first chunk starts with the file's RIFF
header; Riva itself then refuses a config that disagrees with the header ("config format
doesn't match with header format"). voxray trusts the header instead: a WAV file is read at
its own rate and encoding whatever the config says, and so is a FLAC or Ogg file recognised
by its first bytes. Everything else is raw audio as the config declares it.

- Raw ``LINEAR_PCM`` (also for ``ENCODING_UNSPECIFIED``), ``MULAW`` and ``ALAW`` at any
  ``sample_rate_hertz``, ``audio_channel_count`` channels mixed down to one.
- WAV (PCM, float, μ-law, A-law, any channels) decodes as it arrives.
- ``FLAC`` and ``OGGOPUS`` files are decoded whole (FFmpeg through PyAV) at the end: for
  ``Recognize`` that is the only audio; a stream of one is transcribed at its half-close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np

from serve_app.engine.audio.codecs import ALAW, MULAW, AudioFormatError, WavStream, decode_file
from serve_app.engine.audio.pcm import StreamResampler
from serve_app.engine.live.models import ASR_RATE
from serve_app.protocols.grpc_api.proto import riva_audio_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument

Encoding = riva_audio_pb2.AudioEncoding
LINEAR_PCM, FLAC, MULAW_ENC, OGGOPUS, ALAW_ENC = (
    Encoding.LINEAR_PCM,
    Encoding.FLAC,
    Encoding.MULAW,
    Encoding.OGGOPUS,
    Encoding.ALAW,
)
_RAW_WIDTH = {Encoding.ENCODING_UNSPECIFIED: 2, LINEAR_PCM: 2, MULAW_ENC: 1, ALAW_ENC: 1}
_FILES = (FLAC, OGGOPUS)
MIN_RATE, MAX_RATE = 1000, 384_000
MAX_CHANNELS = 32
_HEAD_BYTES = 12  # enough to tell a RIFF/WAVE, fLaC or OggS header from raw audio
_FILE_MAGIC = (b"fLaC", b"OggS")

SUPPORTED = (
    "LINEAR_PCM, MULAW or ALAW at any sample_rate_hertz, a WAV file (its header's rate and "
    "encoding are used), or a FLAC or Ogg/Opus file"
)

Kind = Literal["raw", "wav", "file"]


@dataclass(frozen=True)
class AudioSpec:
    """The audio a ``RecognitionConfig`` declares (a file's own header overrides it).

    Attributes:
        encoding: A ``nvidia.riva.AudioEncoding`` value.
        sample_rate: ``sample_rate_hertz``; 0 when not given (fine for a WAV or other file).
        channels: Interleaved channels of raw audio, mixed down to mono.
    """

    encoding: int
    sample_rate: int = 0
    channels: int = 1


def audio_spec(encoding: int, sample_rate_hertz: int, audio_channel_count: int) -> AudioSpec:
    """Check what a config declares about its audio.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for an unknown encoding or an impossible rate or
            channel count.
    """
    if encoding not in _RAW_WIDTH and encoding not in _FILES:
        raise invalid_argument(f"encoding {encoding} is not supported; send {SUPPORTED}.")
    if sample_rate_hertz and not MIN_RATE <= sample_rate_hertz <= MAX_RATE:
        raise invalid_argument(
            f"sample_rate_hertz {sample_rate_hertz} is out of range; use {MIN_RATE} to {MAX_RATE} "
            "(or 0 with a WAV file, whose header says its rate)."
        )
    if not 0 <= audio_channel_count <= MAX_CHANNELS:
        raise invalid_argument(
            f"audio_channel_count {audio_channel_count} is out of range; use 1 to {MAX_CHANNELS}."
        )
    return AudioSpec(encoding, sample_rate_hertz, max(1, audio_channel_count))


def _format_error(exc: AudioFormatError) -> GrpcAbort:
    return invalid_argument(f"{exc} voxray takes {SUPPORTED}.")


class RivaAudioIn:
    """One call's audio, in the pieces it arrives in, as PCM16 mono at ``ASR_RATE``.

    Args:
        spec: What the config declares.
        max_file_bytes: Largest FLAC/Ogg file kept for decoding whole.
    """

    def __init__(self, spec: AudioSpec, max_file_bytes: int) -> None:
        self._spec = spec
        self._max_file_bytes = max_file_bytes
        self._head = bytearray()  # the first bytes, until they tell what the audio is
        self.kind: Kind | None = None
        self._wav: WavStream | None = None
        self._file = bytearray()
        self._carry = b""  # a partial raw sample frame left from the previous piece
        self._resampler: StreamResampler | None = None
        self.decoded_s = 0.0  # output audio so far, in seconds

    def feed(self, data: bytes) -> bytes:
        """The PCM16 this piece completes (often empty at first, or for a FLAC/Ogg file).

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT`` when the audio cannot be what it claims to be;
                ``RESOURCE_EXHAUSTED`` for a FLAC/Ogg file over ``max_file_bytes``.
        """
        if self.kind is None:
            self._head += data
            if len(self._head) < _HEAD_BYTES:
                return b""
            data = bytes(self._head)
            self._head.clear()
            self._decide(data)
        return self._out(self._decode(data))

    def flush(self) -> bytes:
        """The end of the audio: what is still held back, and a FLAC/Ogg file decoded whole.

        Blocking (FFmpeg) for a file: run it in a thread.

        Raises:
            GrpcAbort: ``INVALID_ARGUMENT`` when the audio ended incomplete or undecodable.
        """
        pcm16 = b""
        if self.kind is None and self._head:
            data = bytes(self._head)
            self._head.clear()
            self._decide(data)
            pcm16 = self._decode(data)
        if self.kind == "wav" and self._resampler is None:
            raise invalid_argument("The WAV file ended before its audio data began.")
        if self.kind == "file":
            try:
                pcm16 = decode_file(bytes(self._file), ASR_RATE)
            except AudioFormatError as exc:
                raise _format_error(exc) from None
            self._file.clear()
            self.decoded_s += len(pcm16) / 2 / ASR_RATE
            return pcm16
        out = self._out(pcm16)
        if self._resampler is not None:
            tail = self._resampler.flush()
            self.decoded_s += len(tail) / 2 / ASR_RATE
            out += tail
        return out

    # -- what the audio is -------------------------------------------------------------------

    def _decide(self, head: bytes) -> None:
        if WavStream.looks_like_wav(head):
            self.kind, self._wav = "wav", WavStream()
        elif head[:4] in _FILE_MAGIC or self._spec.encoding in _FILES:
            self.kind = "file"
        else:
            if not self._spec.sample_rate:
                raise invalid_argument(
                    "sample_rate_hertz is required for raw audio; set it, or send a WAV file "
                    "(its header says the rate)."
                )
            self.kind = "raw"
            self._resampler = StreamResampler(self._spec.sample_rate, ASR_RATE)

    def _decode(self, data: bytes) -> bytes:
        """PCM16 mono at the audio's own rate (nothing yet for a file)."""
        if self.kind == "file":
            if len(self._file) + len(data) > self._max_file_bytes:
                raise GrpcAbort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"The audio file exceeds {self._max_file_bytes} bytes (transcription.max_file_bytes); "
                    "send WAV or raw audio for long recordings.",
                )
            self._file += data
            return b""
        if self.kind == "wav":
            assert self._wav is not None
            try:
                pcm16 = self._wav.feed(data)
            except AudioFormatError as exc:
                raise _format_error(exc) from None
            if self._resampler is None and self._wav.sample_rate is not None:
                self._resampler = StreamResampler(self._wav.sample_rate, ASR_RATE)
            return pcm16
        return self._raw(data)

    def _raw(self, data: bytes) -> bytes:
        width = _RAW_WIDTH[self._spec.encoding]
        frame = width * self._spec.channels
        data = self._carry + data
        cut = len(data) - len(data) % frame
        data, self._carry = data[:cut], data[cut:]
        if not data:
            return b""
        if width == 2:
            samples = np.frombuffer(data, dtype="<i2")
        else:
            table = MULAW if self._spec.encoding == MULAW_ENC else ALAW
            samples = table[np.frombuffer(data, dtype=np.uint8)]
        if self._spec.channels > 1:
            samples = samples.reshape(-1, self._spec.channels).mean(axis=1)
        return samples.astype("<i2").tobytes()

    def _out(self, pcm16: bytes) -> bytes:
        if not pcm16 or self._resampler is None:
            return b""
        out = self._resampler.process(pcm16)
        self.decoded_s += len(out) / 2 / ASR_RATE
        return out


def decode_whole(audio: bytes, spec: AudioSpec, max_file_bytes: int, max_s: float) -> bytes:
    """A whole recording (``Recognize``) as PCM16 mono at ``ASR_RATE``, at most ``max_s`` long.

    Blocking: run it in a thread. Raw and WAV audio is decoded a megabyte at a time, so an
    overlong recording is refused before all of it is decoded.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for audio that cannot be decoded or is empty;
            ``RESOURCE_EXHAUSTED`` for audio longer than ``max_s`` (or a file too big).
    """
    decoder = RivaAudioIn(spec, max_file_bytes)
    out = bytearray()
    step = 1 << 20
    for at in range(0, len(audio), step):
        out += decoder.feed(audio[at : at + step])
        _check_length(decoder.decoded_s, max_s)
    out += decoder.flush()
    _check_length(decoder.decoded_s, max_s)
    if not out:
        raise invalid_argument(f"RecognizeRequest.audio holds no audio; send {SUPPORTED}.")
    return bytes(out)


def _check_length(seconds: float, max_s: float) -> None:
    if seconds > max_s:
        raise GrpcAbort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"The audio is longer than {max_s:g} s, the most Recognize takes (limits.max_input_buffer_s); "
            "use StreamingRecognize for longer recordings.",
        )
