"""Hostile input to Riva speech recognition over gRPC, beside a healthy recognition stream.

Each case is one call on the shared ``grpc_server`` (fake models behind HAProxy): malformed
protobuf bytes, garbage audio in every encoding, truncated and lying WAV headers, absurd
config values, floods of tiny messages. Each must end with its documented status code (never
a hang) and leave no session behind, while a stream opened first goes on and gets its finals.
The cases that are the client's fault get ``INVALID_ARGUMENT`` or ``RESOURCE_EXHAUSTED``
with a message naming the field; noise that is still audio is transcribed and ends OK.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from serve_app.protocols.grpc_api.proto import riva_asr_pb2 as asr
from serve_app.protocols.grpc_api.proto import riva_asr_pb2_grpc, riva_audio_pb2
from tests.grpc_harness import channel
from tests.serve.haproxy_server import HAProxyServer
from tests.serve.test_riva_asr_grpc import SAID, HealthyStream, audio_requests, config, finals_text

E = riva_audio_pb2.AudioEncoding
Code = grpc.StatusCode
TIMEOUT_S = 60.0
STREAM_PATH = "/nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize"
rng = random.Random(4242)  # fixed seed: the same "random" bytes every run
NOISE = rng.randbytes(32_000)  # a second of 16 kHz PCM16 noise


def wav_header(
    rate: int = 16_000, tag: int = 1, bits: int = 16, channels: int = 1, fmt_size: int = 16
) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", fmt_size) + fmt + b"data\xff\xff\xff\xff"


@dataclass
class RivaCase:
    """One call and its outcome.

    Attributes:
        name: The case's label in failure messages.
        stream: The messages of a ``StreamingRecognize`` call (protobuf, or raw bytes sent as
            they are), or ``None`` for a ``Recognize`` call with ``unary``.
        unary: The ``RecognizeRequest`` fields.
        code: The status the call must end with.
        needle: Words its details must hold (empty: any).
    """

    name: str
    stream: list[Any] | None = None
    unary: dict[str, Any] = field(default_factory=dict)
    code: grpc.StatusCode = Code.OK
    needle: str = ""


def bad(name: str, stream: list[Any], needle: str, code: grpc.StatusCode = Code.INVALID_ARGUMENT) -> RivaCase:
    return RivaCase(name, stream, code=code, needle=needle)


def bad_unary(
    name: str, needle: str, code: grpc.StatusCode = Code.INVALID_ARGUMENT, **fields: Any
) -> RivaCase:
    return RivaCase(name, None, fields, code, needle)


def audio(data: bytes, chunk: int = 3200, **fields: Any) -> list[Any]:
    """A config (``fields`` changed), then ``data`` in chunks."""
    return [config(**fields), *audio_requests(data, chunk)]


MULAW_8K = {"encoding": E.MULAW, "sample_rate_hertz": 8000}
CASES = [
    # Bytes that are no StreamingRecognizeRequest: the gRPC server drops what it cannot decode
    # and ends the request stream, so the call looks like one that ended before its config.
    bad("not protobuf", [b"\xff\xff\xff\xff\x0f"], "streaming_config first"),
    bad("truncated protobuf", [config().SerializeToString()[:-3]], "streaming_config first"),
    # Out of order, or twice.
    bad("audio first", audio_requests(NOISE[:3200]), "send streaming_config first"),
    bad("empty message first", [asr.StreamingRecognizeRequest()], "send streaming_config first"),
    bad("config after audio", [*audio(NOISE[:3200]), config()], "already received"),
    # Configs no server could honour.
    bad("rate 2^31-1", [config(sample_rate_hertz=2**31 - 1)], "sample_rate_hertz"),
    bad("rate -8000", [config(sample_rate_hertz=-8000)], "sample_rate_hertz"),
    bad("channels -5", [config(audio_channel_count=-5)], "audio_channel_count"),
    bad("encoding -1", [config(encoding=-1)], "encoding -1 is not supported"),
    bad("language of 10 kB", [config(language_code="x" * 10_000)], "BCP-47"),
    bad("speakers -1", [config(diarization_config={"max_speaker_count": -1})], "max_speaker_count"),
    bad("model of 10 kB", [config(model="m" * 10_000)], "not served here"),
    # Audio that is not what it claims to be.
    bad("wav of mp3", audio(wav_header(tag=85)), "Unsupported WAV"),
    bad("wav of 12-bit", audio(wav_header(bits=12)), "Unsupported WAV"),
    bad("wav of 0 Hz", audio(wav_header(rate=0)), "Unsupported WAV"),
    bad("wav cut in its header", audio(wav_header()[:30]), "ended before its audio"),
    bad("wav data before fmt", audio(b"RIFF\0\0\0\0WAVEdata" + bytes(64)), "before its 'fmt '"),
    bad("flac of noise", audio(NOISE, encoding=E.FLAC), "could not be decoded"),
    bad("ogg magic then noise", audio(b"OggS" + NOISE), "could not be decoded"),
    bad("raw without rate", audio(NOISE, sample_rate_hertz=0), "sample_rate_hertz is required"),
    bad("a 2 MiB chunk", audio(bytes(2 << 20), 2 << 20), "1048576", Code.RESOURCE_EXHAUSTED),
    # Noise that is still audio: transcribed (the fake hears its line in anything) and OK.
    RivaCase("noise in linear pcm", audio(NOISE)),
    RivaCase("noise in mulaw 8 kHz", audio(NOISE, **MULAW_8K)),
    RivaCase(
        "noise in alaw stereo", audio(NOISE, encoding=E.ALAW, sample_rate_hertz=8000, audio_channel_count=2)
    ),
    RivaCase("wav header, noise after", audio(wav_header(rate=44_100) + NOISE)),
    RivaCase("odd byte counts", audio(NOISE[:9999], 333)),
    RivaCase("5000 one-byte messages", audio(NOISE[:5000], 1)),
    RivaCase("empty audio messages", [config(), *[asr.StreamingRecognizeRequest(audio_content=b"")] * 50]),
    RivaCase("only a config", [config(interim=True)]),
    # Field 99 is in no version of the proto: protobuf skips it.
    RivaCase("unknown fields", [config().SerializeToString() + b"\x9a\x06\x03abc", *audio_requests(NOISE)]),
    # Recognize.
    bad_unary("no audio", "no audio"),
    bad_unary("noise as flac", "could not be decoded", audio=NOISE, config={"encoding": E.FLAC}),
    bad_unary("truncated wav", "ended before its audio", audio=wav_header()[:40]),
    bad_unary("2 min of 8 kHz", "120 s", Code.RESOURCE_EXHAUSTED, audio=bytes(8000 * 121), config=MULAW_8K),
    bad_unary("language emoji", "BCP-47", audio=NOISE, config={"language_code": "🦜"}),
    bad_unary("one odd byte", "no audio", audio=b"\x01", config={"sample_rate_hertz": 16_000}),
    RivaCase("recognize noise", None, {"audio": NOISE, "config": {"sample_rate_hertz": 16_000}}),
]


def run_case(opened: grpc.Channel, case: RivaCase) -> tuple[grpc.StatusCode, str]:
    """Make the call; its status code and details."""
    stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(opened)
    try:
        if case.stream is None:
            request = asr.RecognizeRequest(**{"config": {"sample_rate_hertz": 16_000}, **case.unary})
            stub.Recognize(request, timeout=TIMEOUT_S)
        else:
            # Serialize here, so raw bytes (not a message) can be sent as they are.
            call = opened.stream_stream(
                STREAM_PATH, response_deserializer=asr.StreamingRecognizeResponse.FromString
            )
            wire = (m if isinstance(m, bytes) else m.SerializeToString() for m in case.stream)
            list(call(wire, timeout=TIMEOUT_S))
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""


@pytest.fixture
def opened(grpc_server: HAProxyServer) -> Iterator[grpc.Channel]:
    with channel(grpc_server.grpc_target) as ready:
        yield ready


def test_hostile_riva_input_ends_only_its_own_call(
    opened: grpc.Channel, grpc_server: HAProxyServer, make_utterance: Any
) -> None:
    question = make_utterance(
        "What is the capital of France?", rate=16_000, lead_silence_s=0.3, trail_silence_s=1.0
    )
    before = grpc_server.healthz()["sessions"]
    healthy = HealthyStream(riva_asr_pb2_grpc.RivaSpeechRecognitionStub(opened), question)
    assert healthy.first_final()
    failures: dict[str, str] = {}
    for case in CASES:
        started = time.monotonic()
        code, details = run_case(opened, case)
        if code != case.code or case.needle not in details:
            failures[case.name] = f"{code.name}: {details[:200]} ({time.monotonic() - started:.1f} s)"
    assert failures == {}
    deadline = time.monotonic() + 10
    while grpc_server.healthz()["sessions"] > before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert grpc_server.healthz()["sessions"] == before + 1  # no case left a session behind
    assert finals_text(healthy.finish()).count(SAID) >= 2
