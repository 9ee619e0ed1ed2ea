"""Riva speech recognition over real gRPC: voxray with fake models behind HAProxy, as production runs.

voxray's own generated stubs call ``nvidia.riva.asr.RivaSpeechRecognition``: ``StreamingRecognize``
as NVIDIA's ``transcribe_file.py`` calls it (no encoding, rate or language; the WAV file's RIFF
header in the first chunk) and as the seed gateway does (LINEAR_PCM, a rate, en-US),
``Recognize`` and the model listing. Bad input gets its status while a healthy stream, opened
first and kept open, goes on. The fake ASR says "What is the capital of France?" for any audio,
so these tests check what reaches the client, not what a model hears.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from serve_app.engine.audio.codecs import MULAW_ENCODE, encode_g711
from serve_app.engine.audio.pcm import read_wav, resample_pcm16
from serve_app.protocols.grpc_api.proto import riva_asr_pb2 as asr
from serve_app.protocols.grpc_api.proto import riva_asr_pb2_grpc, riva_audio_pb2
from tests.grpc_harness import channel
from tests.rt_driver import wav_file
from tests.serve.haproxy_server import HAProxyServer

E = riva_audio_pb2.AudioEncoding
RATE = 16_000
CHUNK = 3200  # transcribe_file.py's 1600 frames of 16-bit mono
TIMEOUT_S = 60.0
SAID = "What is the capital of France"  # the fake ASR's line, punctuation off


def config(interim: bool = False, **fields: Any) -> asr.StreamingRecognizeRequest:
    """A first message: LINEAR_PCM 16 kHz en-US unless ``fields`` say otherwise."""
    base: dict[str, Any] = {"encoding": E.LINEAR_PCM, "sample_rate_hertz": RATE, "language_code": "en-US"}
    recognition = asr.RecognitionConfig(**{**base, **fields})
    streaming = asr.StreamingRecognitionConfig(config=recognition, interim_results=interim)
    return asr.StreamingRecognizeRequest(streaming_config=streaming)


def audio_requests(data: bytes, chunk: int = CHUNK) -> list[asr.StreamingRecognizeRequest]:
    return [
        asr.StreamingRecognizeRequest(audio_content=data[at : at + chunk])
        for at in range(0, len(data), chunk)
    ]


def finals_text(responses: list[Any]) -> str:
    return "".join(r.alternatives[0].transcript for m in responses for r in m.results if r.is_final)


@pytest.fixture(scope="module")
def question(make_utterance: Any) -> bytes:
    """The question at 16 kHz with a second of silence after it (an utterance the VAD ends)."""
    return make_utterance(
        "What is the capital of France?", rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0
    )


@pytest.fixture
def stub(grpc_server: HAProxyServer) -> Iterator[riva_asr_pb2_grpc.RivaSpeechRecognitionStub]:
    with channel(grpc_server.grpc_target) as opened:
        yield riva_asr_pb2_grpc.RivaSpeechRecognitionStub(opened)


def test_streaming_a_wav_file_as_transcribe_file_does(stub: Any, question_wav: Path) -> None:
    bare = asr.StreamingRecognizeRequest(
        streaming_config=asr.StreamingRecognitionConfig(
            config=asr.RecognitionConfig(max_alternatives=1, verbatim_transcripts=True), interim_results=True
        )
    )
    data = question_wav.read_bytes()  # 24 kHz; the header is the only place that says so
    responses = list(stub.StreamingRecognize(iter([bare, *audio_requests(data)]), timeout=TIMEOUT_S))
    assert SAID in finals_text(responses)
    finals = [r for m in responses for r in m.results if r.is_final]
    processed = [r.audio_processed for m in responses for r in m.results]
    # Audio heard so far when each result went out: read at the file's own rate (24 kHz).
    assert processed == sorted(processed) and finals[-1].audio_processed > 1.5
    assert processed[-1] <= len(read_wav(question_wav)[0]) / 2 / 24_000 + 0.05
    assert all(r.channel_tag == 1 and len(r.alternatives) == 1 for m in responses for r in m.results)


def test_streaming_with_word_times_and_speaker_tags(stub: Any, question: bytes) -> None:
    diarized = {"enable_speaker_diarization": True, "max_speaker_count": 2}
    first = config(
        enable_word_time_offsets=True, enable_automatic_punctuation=True, diarization_config=diarized
    )
    responses = list(stub.StreamingRecognize(iter([first, *audio_requests(question)]), timeout=TIMEOUT_S))
    words = [w for m in responses for r in m.results if r.is_final for w in r.alternatives[0].words]
    assert [w.word for w in words][:6] == ["What", "is", "the", "capital", "of", "France?"]
    assert all(w.speaker_tag >= 1 and 0 <= w.start_time <= w.end_time for w in words)
    assert words[-1].end_time <= len(question) / 2 / RATE * 1000


def test_recognize_a_whole_recording(stub: Any, question: bytes, question_wav: Path) -> None:
    reply = stub.Recognize(
        asr.RecognizeRequest(config=asr.RecognitionConfig(), audio=question_wav.read_bytes())
    )
    assert SAID in "".join(r.alternatives[0].transcript for r in reply.results)
    mulaw = encode_g711(resample_pcm16(question, RATE, 8000), MULAW_ENCODE)
    request = asr.RecognizeRequest(
        config=asr.RecognitionConfig(encoding=E.MULAW, sample_rate_hertz=8000, enable_word_time_offsets=True),
        audio=mulaw,
    )
    reply = stub.Recognize(request, timeout=TIMEOUT_S)
    assert reply.results and SAID in reply.results[0].alternatives[0].transcript
    assert reply.results[0].alternatives[0].words[0].start_time < 600


def test_the_model_listing_as_list_models_reads_it(stub: Any) -> None:
    reply = stub.GetRivaSpeechRecognitionConfig(asr.RivaSpeechRecognitionConfigRequest(), timeout=TIMEOUT_S)
    by_type = {c.parameters["type"]: c.model_name for c in reply.model_config}
    assert set(by_type) == {"online", "offline"}
    assert all(c.parameters["language_code"] == "en-US" for c in reply.model_config)
    named = config(model=by_type["online"])
    responses = list(stub.StreamingRecognize(iter([named]), timeout=TIMEOUT_S))
    assert responses == []  # a config and no audio: nothing to say, and OK


class HealthyStream:
    """A recognition stream kept open across the bad calls: one utterance now, one when told."""

    def __init__(self, stub: Any, utterance: bytes) -> None:
        self._utterance = utterance
        self._requests: queue.Queue[asr.StreamingRecognizeRequest | None] = queue.Queue()
        for request in [config(interim=True), *audio_requests(utterance)]:
            self._requests.put(request)
        self.responses: list[Any] = []
        self.error: grpc.RpcError | None = None
        self._call = stub.StreamingRecognize(self._iterate(), timeout=240)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iterate(self) -> Iterator[asr.StreamingRecognizeRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            self.responses.extend(self._call)
        except grpc.RpcError as exc:
            self.error = exc

    def first_final(self, timeout_s: float = TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not finals_text(self.responses):
            time.sleep(0.05)
        return bool(finals_text(self.responses))

    def finish(self) -> list[Any]:
        for request in audio_requests(self._utterance):
            self._requests.put(request)
        self._requests.put(None)
        self._reader.join(TIMEOUT_S)
        assert self.error is None, self.error
        return self.responses


Code = grpc.StatusCode
BAD_STREAMS = [
    (
        "audio first",
        [asr.StreamingRecognizeRequest(audio_content=bytes(CHUNK))],
        Code.INVALID_ARGUMENT,
        "first",
    ),
    ("no config at all", [], Code.INVALID_ARGUMENT, "send streaming_config first"),
    ("config twice", [config(), config()], Code.INVALID_ARGUMENT, "already received"),
    ("unknown encoding", [config(encoding=12)], Code.INVALID_ARGUMENT, "encoding 12 is not supported"),
    (
        "no rate",
        [config(sample_rate_hertz=0), *audio_requests(bytes(CHUNK))],
        Code.INVALID_ARGUMENT,
        "required",
    ),
    (
        "ogg that is not",
        [config(encoding=E.OGGOPUS), *audio_requests(bytes(CHUNK))],
        Code.INVALID_ARGUMENT,
        "decoded",
    ),
    ("bad language", [config(language_code="🇫🇷")], Code.INVALID_ARGUMENT, "BCP-47"),
    (
        "huge message",
        [config(), *audio_requests(bytes((1 << 20) + 2), 1 << 21)],
        Code.RESOURCE_EXHAUSTED,
        "1048576",
    ),
]
MULAW_8K = {"encoding": E.MULAW, "sample_rate_hertz": 8000}
BAD_UNARY = [
    ("empty audio", {"audio": b""}, Code.INVALID_ARGUMENT, "no audio"),
    ("too long", {"audio": bytes(8000 * 121), "config": MULAW_8K}, Code.RESOURCE_EXHAUSTED, "120 s"),
    (
        "unknown model",
        {"audio": bytes(CHUNK), "config": {"model": "parakeet"}},
        Code.INVALID_ARGUMENT,
        "served",
    ),
]


def test_bad_input_gets_its_status_while_another_stream_goes_on(
    stub: Any, grpc_server: HAProxyServer, question: bytes
) -> None:
    before = grpc_server.healthz()["sessions"]
    healthy = HealthyStream(stub, question)
    assert healthy.first_final()
    failures = []
    for name, requests, code, needle in BAD_STREAMS:
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.StreamingRecognize(iter(requests), timeout=TIMEOUT_S))
        if refused.value.code() != code or needle not in refused.value.details():
            failures.append((name, refused.value.code(), refused.value.details()))
    for name, fields, code, needle in BAD_UNARY:
        with pytest.raises(grpc.RpcError) as refused:
            stub.Recognize(asr.RecognizeRequest(**{"config": {}, **fields}), timeout=TIMEOUT_S)
        if refused.value.code() != code or needle not in refused.value.details():
            failures.append((name, refused.value.code(), refused.value.details()))
    assert failures == []

    # Cancelled mid-stream: the client sees CANCELLED and the server lets the session go.
    hold: queue.Queue[None] = queue.Queue()

    def open_stream() -> Iterator[asr.StreamingRecognizeRequest]:
        yield config(interim=True)
        yield from audio_requests(question)
        hold.get()  # the stream stays open until cancelled

    cancelled = stub.StreamingRecognize(open_stream(), timeout=TIMEOUT_S)
    next(cancelled)
    cancelled.cancel()
    hold.put(None)
    with pytest.raises(grpc.RpcError) as stopped:
        list(cancelled)
    assert stopped.value.code() == grpc.StatusCode.CANCELLED

    # Half-closed with the utterance still open: it is finalised, and the call ends OK.
    no_trailing_silence = question[: -RATE * 2]
    flushed = list(
        stub.StreamingRecognize(iter([config(), *audio_requests(no_trailing_silence)]), timeout=TIMEOUT_S)
    )
    assert SAID in finals_text(flushed)

    deadline = time.monotonic() + 10
    while grpc_server.healthz()["sessions"] > before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert grpc_server.healthz()["sessions"] == before + 1  # only the healthy stream is live
    responses = healthy.finish()
    assert finals_text(responses).count(SAID) >= 2
    assert any(not r.is_final for m in responses for r in m.results)  # interim results asked for


def test_recognition_of_a_wav_at_another_rate_over_the_wire(stub: Any, make_utterance: Any) -> None:
    audio = make_utterance(
        "What is the capital of France?", rate=44_100, lead_silence_s=0.3, trail_silence_s=1.0
    )
    first = config(encoding=E.ALAW, sample_rate_hertz=8000)  # the header says otherwise, and wins
    responses = list(
        stub.StreamingRecognize(iter([first, *audio_requests(wav_file(audio, 44_100))]), timeout=TIMEOUT_S)
    )
    assert SAID in finals_text(responses)
