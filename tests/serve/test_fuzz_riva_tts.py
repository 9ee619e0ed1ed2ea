"""Hostile input to Riva speech synthesis over real gRPC, beside a healthy synthesis stream.

Each case is one call in one of the three shapes real clients use (``Synthesize``, the
bidirectional ``SynthesizeOnline`` of client 2.25+, and the one-request server-streaming shape
of client 2.24 on the same method path), with the status it must end with and words its
details must hold. Odd but valid input (emoji, NUL characters, broken SSML, an entity bomb)
must be served, not fail. Meanwhile a healthy stream, opened first, must get all its audio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from serve_app.protocols.grpc_api.proto import riva_tts_pb2, riva_tts_pb2_grpc
from tests.grpc_harness import channel
from tests.serve.haproxy_server import HAProxyServer
from tests.serve.riva_tts_calls import (
    ONLINE_PATH,
    TIMEOUT_S,
    Enc,
    HealthyStream,
    Response,
    audio_by_text,
    request,
)

OK = grpc.StatusCode.OK
BAD = grpc.StatusCode.INVALID_ARGUMENT
SYNTHESIZE_PATH = "/nvidia.riva.tts.RivaSpeechSynthesis/Synthesize"
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]><speak>&d;&d;&d;</speak>'
)


@dataclass(frozen=True)
class TTSCase:
    """One call and its outcome.

    Attributes:
        name: The case's label.
        shape: ``unary``, ``bidi`` (a good request first, then these) or ``old`` (2.24's shape).
        requests: What the client sends (protobuf messages, or raw bytes sent as they are).
        code: The status the call must end with.
        needle: Words the details must hold (for an error).
        audio: For OK: whether the last request must get audio.
    """

    name: str
    shape: str
    requests: tuple[Any, ...]
    code: grpc.StatusCode = BAD
    needle: str = ""
    audio: bool = True


def case(name: str, shape: str, *requests: Any, **outcome: Any) -> TTSCase:
    return TTSCase(name, shape, requests, **outcome)


CASES = [
    case("encoding out of the enum", "unary", request(encoding=42), needle="42 is not supported"),
    case("oggopus", "bidi", request(encoding=Enc.OGGOPUS), needle="LINEAR_PCM, MULAW, ALAW"),
    case("flac in the old shape", "old", request(encoding=Enc.FLAC), needle="FLAC"),
    case("negative rate", "unary", request(sample_rate_hz=-1), needle="sample_rate_hz -1"),
    case("rate below 8 kHz", "old", request(sample_rate_hz=7999), needle="8000"),
    case("rate far too high", "bidi", request(sample_rate_hz=2_000_000_000), needle="96000"),
    case("huge voice name", "unary", request(voice_name="v" * 100_000), needle="Unknown voice_name"),
    case("voice of another vendor", "old", request(voice_name="en-US-Neural2-A"), needle="English-US.joe"),
    case("huge language code", "unary", request(language_code="x" * 100_000), needle="language_code"),
    case("language the voice lacks", "bidi", request(language_code="ja-JP"), needle="ja-JP"),
    case("empty text in the old shape", "old", request(""), needle="text is empty"),
    case("whitespace text", "bidi", request(" \t\n "), needle="text is empty"),
    case("text over the bound", "old", request("é" * 20_001), needle="at most 20000"),
    case("zero-shot prompt", "unary", request(zero_shot_data={"transcript": "hi"}), needle="zero_shot_data"),
    case(
        "dictionary",
        "bidi",
        request(custom_dictionary="tomato  T AH0 M EY1 T OW2"),
        needle="custom_dictionary",
    ),
    # gRPC itself parses the wire format, before voxray sees a message: a unary call ends
    # UNKNOWN with the DecodeError, and on a stream the request iterator just ends, so the call
    # ends like a half-close (the good first text still answered).
    case("not protobuf", "unary", b"\xff\xff\xff\xff", code=grpc.StatusCode.UNKNOWN, needle="Error parsing"),
    case("not protobuf on a stream", "bidi", b"\x0a\xff\xff\xff\x0f", code=OK),
    case("only emoji", "unary", request("🙂🙃"), code=OK, audio=False),
    case("NUL characters", "bidi", request("\x00\x00\x00"), code=OK, audio=False),
    case("control characters and words", "old", request("one\x07two\x1bthree"), code=OK),
    case("broken SSML", "unary", request("<speak><p>Hello"), code=OK),
    case("SSML document", "bidi", request("<speak>Hi <break time='2s'/> there</speak>"), code=OK),
    case("entity bomb", "unary", request(BOMB), code=OK),
    case("text at the bound", "old", request("a" * 20_000, encoding=Enc.MULAW, sample_rate_hz=8000), code=OK),
    case("many texts on one stream", "bidi", *(request(f"Text {i}.") for i in range(40)), code=OK),
]


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _call(opened: grpc.Channel, item: TTSCase) -> tuple[grpc.StatusCode, str, list[Any]]:
    """Make the case's call; its status, details and replies."""
    calls: dict[str, Callable[..., Any]] = {
        "unary": opened.unary_unary(SYNTHESIZE_PATH, _serialize, Response.FromString),
        "old": opened.unary_stream(ONLINE_PATH, _serialize, Response.FromString),
        "bidi": opened.stream_stream(ONLINE_PATH, _serialize, Response.FromString),
    }
    try:
        if item.shape == "unary":
            return OK, "", [calls["unary"](item.requests[0], timeout=TIMEOUT_S)]
        if item.shape == "old":
            return OK, "", list(calls["old"](item.requests[0], timeout=TIMEOUT_S))
        return OK, "", list(calls["bidi"](iter([request("Good first."), *item.requests]), timeout=TIMEOUT_S))
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def _problem(item: TTSCase, code: grpc.StatusCode, details: str, replies: list[Any]) -> str | None:
    if code != item.code:
        return f"ended {code.name}, not {item.code.name}: {details[:200]}"
    if code != OK:
        if item.needle not in details or len(details) > 1000:
            return f"details {details[:200]!r} lack {item.needle!r} or are too long ({len(details)})"
        return None
    answered = (
        audio_by_text(replies) if item.shape != "unary" else [(replies[0].meta.text, len(replies[0].audio))]
    )
    texts = [r.text for r in item.requests if not isinstance(r, bytes)] or ["Good first."]
    if [text for text, _ in answered][-len(texts) :] != texts:
        return f"answered {[t[:20] for t, _ in answered]}, not the requests in order"
    if bool(answered[-1][1]) != item.audio:
        return f"{answered[-1][1]} bytes of audio for the last text; audio expected: {item.audio}"
    return None


@pytest.fixture
def stub(grpc_server: HAProxyServer) -> Iterator[riva_tts_pb2_grpc.RivaSpeechSynthesisStub]:
    with channel(grpc_server.grpc_target) as opened:
        yield riva_tts_pb2_grpc.RivaSpeechSynthesisStub(opened)


def test_hostile_synthesis_input_ends_only_its_own_call(stub: Any, grpc_server: HAProxyServer) -> None:
    healthy = HealthyStream(stub)
    assert healthy.first_answered()
    failures: dict[str, str] = {}
    with channel(grpc_server.grpc_target) as opened:
        for item in CASES:
            problem = _problem(item, *_call(opened, item))
            if problem:
                failures[item.name] = problem
    assert failures == {}
    assert [text for text, _ in healthy.finish()] == ["Before the bad calls.", "After the bad calls."]
    listing = stub.GetRivaSynthesisConfig(riva_tts_pb2.RivaSynthesisConfigRequest(model_name="x" * 10_000))
    assert not listing.model_config  # a model it does not have: nothing listed, no error


def test_requests_carry_ids_back(stub: Any) -> None:
    tagged = request("With an id.")
    tagged.id.value = "req-42"
    replies = list(stub.SynthesizeOnline(iter([tagged, request("Without.")]), timeout=TIMEOUT_S))
    ids = [reply.id.value for reply in replies]
    assert ids[0] == "req-42" and ids[-1] == "" and set(ids) == {"req-42", ""}
    assert stub.Synthesize(tagged, timeout=TIMEOUT_S).id.value == "req-42"
