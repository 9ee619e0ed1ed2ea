"""Riva speech synthesis over real gRPC: voxray with fake models behind HAProxy, as production runs.

voxray's own generated stubs call ``nvidia.riva.tts.RivaSpeechSynthesis``: ``Synthesize``,
``SynthesizeOnline`` as the bidirectional stream of client 2.25+ and in the server-streaming
call shape of client 2.24 (one request, on the same method path), and the config listing.
Bad input gets its status while a healthy stream, opened first and kept open, goes on.
The fake TTS speaks a tone at 22.05 kHz, 60 ms per character: lengths are known in advance.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
    Request,
    Response,
    audio_by_text,
    request,
    samples_of,
)


@pytest.fixture
def stub(grpc_server: HAProxyServer) -> Iterator[riva_tts_pb2_grpc.RivaSpeechSynthesisStub]:
    with channel(grpc_server.grpc_target) as opened:
        yield riva_tts_pb2_grpc.RivaSpeechSynthesisStub(opened)


def test_synthesize_returns_the_whole_audio(stub: Any) -> None:
    text = "The whole sentence at once."
    reply = stub.Synthesize(request(text), timeout=TIMEOUT_S)
    assert abs(len(reply.audio) // 2 - samples_of(text, 16000)) <= 2
    assert reply.meta.text == text and reply.meta.processed_text == text
    mulaw = stub.Synthesize(request(text, encoding=Enc.MULAW, sample_rate_hz=8000), timeout=TIMEOUT_S)
    assert abs(len(mulaw.audio) - samples_of(text, 8000)) <= 2  # a byte a sample


def test_online_bidi_answers_several_texts_in_order(stub: Any) -> None:
    texts = ["First sentence.", "A second, longer sentence follows.", "Third."]
    replies = list(
        stub.SynthesizeOnline(iter([request(t, sample_rate_hz=44100) for t in texts]), timeout=TIMEOUT_S)
    )
    answered = audio_by_text(replies)
    assert [text for text, _ in answered] == texts
    for text, size in answered:
        assert abs(size // 2 - samples_of(text, 44100)) <= 2, text
    assert len(replies) > len(texts)  # streamed in pieces, not one reply per text


def test_online_in_the_old_server_streaming_call_shape(grpc_server: HAProxyServer) -> None:
    # What nvidia-riva-client 2.24 does: a unary-stream call on the same method path.
    text = "Spoken to an old client."
    with channel(grpc_server.grpc_target) as opened:
        call = opened.unary_stream(
            ONLINE_PATH,
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        replies = list(call(request(text, voice_name=""), timeout=TIMEOUT_S))
    assert audio_by_text(replies) == [(text, audio_by_text(replies)[0][1])]
    assert abs(audio_by_text(replies)[0][1] // 2 - samples_of(text, 16000)) <= 2


def test_config_lists_the_default_voice(stub: Any) -> None:
    reply = stub.GetRivaSynthesisConfig(riva_tts_pb2.RivaSynthesisConfigRequest(), timeout=TIMEOUT_S)
    (model,) = reply.model_config
    parameters = dict(model.parameters)
    assert parameters["type"] == "online" and parameters["language_code"] == "en-US"
    assert f"{parameters['voice_name']}.{parameters['subvoices'].split(':')[0]}" == "English-US.joe"
    spoken = stub.Synthesize(request(voice_name="English-US.joe"), timeout=TIMEOUT_S)
    assert spoken.audio


BAD_INPUT = [
    ("wrong encoding", {"encoding": Enc.OGGOPUS}, "LINEAR_PCM, MULAW, ALAW"),
    ("unknown voice", {"voice_name": "English-US.Female-1"}, "English-US.joe"),
    ("empty text", {"text": ""}, "text is empty"),
    ("huge text", {"text": "word " * 4001}, "at most 20000"),
]


def test_bad_input_gets_its_status_while_another_stream_goes_on(
    stub: Any, grpc_server: HAProxyServer
) -> None:
    before = grpc_server.healthz()["sessions"]
    healthy = HealthyStream(stub)
    assert healthy.first_answered()
    for name, fields, needle in BAD_INPUT:
        for method in ("Synthesize", "SynthesizeOnline"):
            bad = request(**{"text": "Fine text.", **fields})
            with pytest.raises(grpc.RpcError) as refused:
                if method == "Synthesize":
                    stub.Synthesize(bad, timeout=TIMEOUT_S)
                else:
                    list(stub.SynthesizeOnline(iter([request("Good first."), bad]), timeout=TIMEOUT_S))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, method)
            assert needle in refused.value.details(), (name, method, refused.value.details())

    # Cancelled mid-speech: the client sees CANCELLED and the server lets the session go.
    cancelled = stub.SynthesizeOnline(iter([request("a long text to cancel " * 40)]), timeout=TIMEOUT_S)
    next(cancelled)
    cancelled.cancel()
    with pytest.raises(grpc.RpcError) as stopped:
        list(cancelled)
    assert stopped.value.code() == grpc.StatusCode.CANCELLED

    # Half-closed without a request: the stream ends OK with nothing to say.
    assert list(stub.SynthesizeOnline(iter([]), timeout=TIMEOUT_S)) == []

    deadline = time.monotonic() + 10
    while grpc_server.healthz()["sessions"] > before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert grpc_server.healthz()["sessions"] == before + 1  # only the healthy stream is live
    answered = healthy.finish()
    assert [text for text, _ in answered] == ["Before the bad calls.", "After the bad calls."]
    assert all(abs(size // 2 - samples_of(text, 16000)) <= 2 for text, size in answered)
