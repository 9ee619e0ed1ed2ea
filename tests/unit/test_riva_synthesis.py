"""Riva speech synthesis without Ray: encodings and rates, voices, errors, streams, cancellation.

The fake TTS (``deployments.backends.fake.FakeTTS``) speaks a 220 Hz tone at 22.05 kHz, 60 ms
per character, so every audio length below is known in advance.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from deployments.types import AudioChunk
from serve_app.config import AppConfig
from serve_app.engine.audio.codecs import ALAW, ALAW_ENCODE, MULAW, MULAW_ENCODE, encode_g711
from serve_app.engine.model_clients import ModelClients, ModelReplicaError
from serve_app.protocols.grpc_api.proto import riva_audio_pb2, riva_tts_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort
from serve_app.protocols.grpc_api.stream import GrpcStream
from serve_app.protocols.riva import synthesis
from serve_app.protocols.riva.synthesis import RivaStreamingSynthesis, speakable_text, synthesize
from serve_app.protocols.riva.tts_voices import pick_voice, synthesis_config, voices

Enc = riva_audio_pb2.AudioEncoding
Request = riva_tts_pb2.SynthesizeSpeechRequest
FAKE_RATE = 22050
MS_PER_CHAR = 60.0
TEXT = "Hello there, how are you?"
CONFIG = AppConfig.model_validate({"tts": {"backend": "fake"}})


def models(tts: Any = None, **tts_options: Any) -> ModelClients:
    return ModelClients(asr=FakeASR(), llm=FakeLLM(), tts=tts or FakeTTS(None, tts_options))


def request(text: str = TEXT, **fields: Any) -> riva_tts_pb2.SynthesizeSpeechRequest:
    defaults: dict[str, Any] = {"language_code": "en-US", "encoding": Enc.LINEAR_PCM, "sample_rate_hz": 16000}
    return Request(text=text, **{**defaults, **fields})


def samples_of(text: str, rate: int) -> int:
    return round(len(text) * MS_PER_CHAR / 1000 * rate)


def pcm(audio: bytes) -> np.ndarray:
    return np.frombuffer(audio, dtype="<i2").astype(np.float64)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((reference - test) ** 2) or 1e-9
    return float(10 * np.log10(np.sum(reference**2) / noise))


# -- encodings and rates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoder", "table"), [(MULAW_ENCODE, MULAW), (ALAW_ENCODE, ALAW)], ids=["mulaw", "alaw"]
)
def test_g711_encoders_pick_the_nearest_code(encoder: np.ndarray, table: np.ndarray) -> None:
    every_sample = np.arange(-32768, 32768, dtype="<i2")
    decoded = table[np.frombuffer(encode_g711(every_sample.tobytes(), encoder), dtype=np.uint8)]
    levels = np.unique(table).astype(np.int32)
    best = np.abs(every_sample.astype(np.int32)[:, None] - levels[None, :]).min(axis=1)
    assert np.array_equal(np.abs(decoded.astype(np.int32) - every_sample), best)
    codes_back = table[np.frombuffer(encode_g711(table.astype("<i2").tobytes(), encoder), dtype=np.uint8)]
    assert np.array_equal(codes_back, table)  # every code's value encodes back to itself


@pytest.mark.parametrize("sample_rate", [16000, 44100, 0])
async def test_linear_pcm_at_the_requested_rate(sample_rate: int) -> None:
    reply = await synthesize(request(sample_rate_hz=sample_rate), CONFIG, models())
    rate = sample_rate or FAKE_RATE  # 0: the voice's own rate
    assert abs(len(reply.audio) // 2 - samples_of(TEXT, rate)) <= 2
    assert reply.meta.text == TEXT and reply.meta.processed_text == TEXT


async def test_unset_encoding_means_linear_pcm() -> None:
    plain = await synthesize(request(), CONFIG, models())
    unset = await synthesize(request(encoding=Enc.ENCODING_UNSPECIFIED), CONFIG, models())
    assert unset.audio == plain.audio


@pytest.mark.parametrize(("encoding", "table"), [(Enc.MULAW, MULAW), (Enc.ALAW, ALAW)], ids=["mulaw", "alaw"])
async def test_g711_output_decodes_back_close_to_the_pcm(encoding: int, table: np.ndarray) -> None:
    linear = pcm((await synthesize(request(sample_rate_hz=8000), CONFIG, models())).audio)
    coded = (await synthesize(request(sample_rate_hz=8000, encoding=encoding), CONFIG, models())).audio
    assert len(coded) == len(linear)  # one byte a sample
    decoded = table[np.frombuffer(coded, dtype=np.uint8)].astype(np.float64)
    assert snr_db(linear, decoded) > 30  # G.711 gives ~38 dB on a tone at -20 dBFS


@pytest.mark.parametrize("encoding", [Enc.FLAC, Enc.OGGOPUS, 99])
async def test_unsupported_encodings_are_refused_naming_the_supported(encoding: int) -> None:
    with pytest.raises(GrpcAbort) as refused:
        await synthesize(request(encoding=encoding), CONFIG, models())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "LINEAR_PCM, MULAW, ALAW" in refused.value.details


@pytest.mark.parametrize("rate", [4000, -16000, 200_000])
async def test_sample_rates_out_of_range_are_refused(rate: int) -> None:
    with pytest.raises(GrpcAbort) as refused:
        await synthesize(request(sample_rate_hz=rate), CONFIG, models())
    assert (
        refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "sample_rate_hz" in refused.value.details
    )


# -- voices --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "joe", "JOE", "English-US.joe", "english-us"])
@pytest.mark.parametrize("language", ["en-US", "", "en", "en_us"])
def test_voice_names_and_languages_that_reach_the_default_voice(name: str, language: str) -> None:
    voice = pick_voice(CONFIG, name, language)
    assert (voice.name, voice.language_code, voice.full_name) == ("joe", "en-US", "English-US.joe")


def test_unknown_voice_is_refused_listing_the_voices() -> None:
    with pytest.raises(GrpcAbort) as refused:
        pick_voice(CONFIG, "English-US.Female-1", "en-US")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "English-US.Female-1" in refused.value.details and "English-US.joe (en-US)" in refused.value.details
    )


@pytest.mark.parametrize("name", ["", "joe"])
def test_a_language_the_voice_does_not_speak_is_refused(name: str) -> None:
    with pytest.raises(GrpcAbort) as refused:
        pick_voice(CONFIG, name, "de-DE")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "de-DE" in refused.value.details


def test_the_voice_follows_the_config() -> None:
    config = AppConfig.model_validate(
        {
            "tts": {"backend": "fake", "model": "/voices/de_DE-thorsten-medium.onnx"},
            "session": {"voice": "thorsten"},
        }
    )
    (voice,) = voices(config)
    assert (voice.full_name, voice.language_code) == ("German-DE.thorsten", "de-DE")
    piper = AppConfig.model_validate({})  # the default: Piper's bundled en_US-joe-medium
    assert [(v.full_name, v.model_name) for v in voices(piper)] == [
        ("English-US.joe", "voxray-piper-piper-joe-medium")
    ]


def test_config_lists_voices_as_talk_py_reads_them() -> None:
    reply = synthesis_config(CONFIG, riva_tts_pb2.RivaSynthesisConfigRequest())
    listed: dict[str, list[str]] = {}
    for model in reply.model_config:  # talk.py --list-voices, as NVIDIA wrote it
        assert model.parameters["type"] == "online"
        subvoices = [v.split(":")[0] for v in model.parameters["subvoices"].split(",")]
        names = [model.parameters["voice_name"] + "." + s for s in subvoices]
        listed.setdefault(model.parameters["language_code"], []).extend(names)
    assert json.loads(json.dumps(listed)) == {"en-US": ["English-US.joe"]}
    name = reply.model_config[0].model_name
    only = synthesis_config(CONFIG, riva_tts_pb2.RivaSynthesisConfigRequest(model_name=name))
    assert [m.model_name for m in only.model_config] == [name]
    none = synthesis_config(CONFIG, riva_tts_pb2.RivaSynthesisConfigRequest(model_name="nope"))
    assert not none.model_config


# -- request errors and text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": "   \n"}, "text is empty"),
        ({"text": "x" * 20_001}, "at most 20000"),
        ({"voice_name": "alloy"}, "Unknown voice_name 'alloy'"),
        ({"language_code": "fr-FR"}, "fr-FR"),
        ({"custom_dictionary": "tomato  t ah m aa t ow"}, "custom_dictionary is not supported"),
        ({"zero_shot_data": riva_tts_pb2.ZeroShotData(audio_prompt=b"\x00\x01")}, "zero_shot_data"),
    ],
    ids=["empty", "blank", "too-long", "voice", "language", "dictionary", "zero-shot"],
)
async def test_bad_requests_are_invalid_arguments(fields: dict[str, Any], needle: str) -> None:
    tts = FakeTTS()
    with pytest.raises(GrpcAbort) as refused:
        await synthesize(request(**{"text": TEXT, **fields}), CONFIG, models(tts))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in refused.value.details
    assert tts.stats()["chunks"] == 0


async def test_empty_extras_are_accepted_and_the_request_id_echoed() -> None:
    empty_extras = request(zero_shot_data=riva_tts_pb2.ZeroShotData(), custom_dictionary="")
    empty_extras.id.value = "req-7"
    reply = await synthesize(empty_extras, CONFIG, models())
    assert reply.audio and reply.id.value == "req-7"


def test_ssml_and_markdown_are_read_as_text() -> None:
    assert speakable_text(
        "<speak>Hello <break time='1s'/> <prosody rate='slow'>world</prosody>.</speak>"
    ) == ("Hello world.")
    assert speakable_text("**Bold** and a [link](http://x.y)") == "Bold and a link"
    assert speakable_text("<speak>broken") == "<speak>broken"  # not a document: read as it is


async def test_text_with_nothing_speakable_gets_no_audio() -> None:
    reply = await synthesize(request("🙂🙂"), CONFIG, models())
    assert reply.audio == b"" and reply.meta.text == "🙂🙂" and reply.meta.processed_text == ""


async def test_audio_beyond_one_message_is_refused_and_stops_the_tts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthesis, "MAX_UNARY_AUDIO_BYTES", 10_000)
    tts = FakeTTS()
    with pytest.raises(GrpcAbort) as refused:
        await synthesize(request("a long sentence " * 20), CONFIG, models(tts))
    assert (
        refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "SynthesizeOnline" in refused.value.details
    )
    assert tts.stats()["active_syntheses"] == 0 and tts.stats()["aborted_syntheses"] == 1


class _DyingTTS:
    """A TTS whose replica dies after one chunk (as HandleTTS reports it)."""

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        yield AudioChunk(pcm16=b"\x00\x00" * 100, sample_rate=FAKE_RATE)
        raise ModelReplicaError("TTS replica failed during synthesize: it died after streaming 1 items")


@pytest.mark.parametrize(
    ("tts", "code"),
    [(FakeTTS(None, {"fail": True}), grpc.StatusCode.INTERNAL), (_DyingTTS(), grpc.StatusCode.UNAVAILABLE)],
    ids=["model-error", "replica-died"],
)
async def test_tts_failures_become_statuses(tts: Any, code: grpc.StatusCode) -> None:
    with pytest.raises(GrpcAbort) as failed:
        await synthesize(request(), CONFIG, models(tts))
    assert failed.value.code == code and "Speech synthesis" in failed.value.details


# -- SynthesizeOnline ----------------------------------------------------------------------


class FakeContext:
    """What GrpcStream needs of Serve's gRPC context: the status it ends with."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


async def requests_of(*items: Any, hold: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for item in items:
        yield item
    if hold is not None:  # the client keeps its side open until told
        await hold.wait()


def run_stream(tts_models: ModelClients, requests: AsyncIterator[Any]) -> tuple[Any, FakeContext, list[Any]]:
    context = FakeContext()
    stream = GrpcStream(CONFIG.limits, context)
    sessions: list[RivaStreamingSynthesis] = []

    def build() -> RivaStreamingSynthesis:
        sessions.append(RivaStreamingSynthesis(CONFIG, tts_models, stream.emit))
        return sessions[0]

    return stream.run(build(), requests), context, sessions


async def test_online_answers_several_requests_in_order_then_ends_ok() -> None:
    texts = ["Hi.", "A somewhat longer second sentence.", "Third one here."]
    first = request(texts[0])
    first.id.value = "one"
    messages, context, sessions = run_stream(models(), requests_of(first, *(request(t) for t in texts[1:])))
    replies = [reply async for reply in messages]
    assert context.code is None  # ended OK after the half-close
    with_meta = [i for i, reply in enumerate(replies) if reply.meta.text]
    assert [replies[i].meta.text for i in with_meta] == texts
    bounds = [*with_meta, len(replies)]
    lengths = [sum(len(r.audio) // 2 for r in replies[a:b]) for a, b in itertools.pairwise(bounds)]
    assert [abs(n - samples_of(t, 16000)) <= 2 for n, t in zip(lengths, texts, strict=True)] == [True] * 3
    assert {r.id.value for r in replies[: with_meta[1]]} == {"one"} and not replies[-1].id.value
    assert len(sessions[0].first_audio_s) == 3


async def test_a_bad_request_mid_stream_ends_it_after_the_good_ones() -> None:
    messages, context, _ = run_stream(models(), requests_of(request("Fine."), request(""), request("Never.")))
    replies = [reply async for reply in messages]
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and "text is empty" in context.details
    assert {r.meta.text for r in replies if r.meta.text} == {"Fine."}
    assert sum(len(r.audio) for r in replies) // 2 == pytest.approx(samples_of("Fine.", 16000), abs=2)


async def test_online_with_nothing_speakable_answers_with_meta_only() -> None:
    messages, context, _ = run_stream(models(), requests_of(request("🙂")))
    replies = [reply async for reply in messages]
    assert context.code is None and len(replies) == 1 and replies[0].audio == b""


async def test_cancelled_stream_stops_the_tts() -> None:
    # Paced at real time: 60 ms of audio per character takes 60 ms to make.
    tts = FakeTTS(None, {"realtime_factor": 1.0, "chunk_ms": 50})
    hold = asyncio.Event()
    messages, _, sessions = run_stream(models(tts), requests_of(request("a long text " * 30), hold=hold))
    first = await anext(messages)
    assert first.audio and sessions[0].responding and tts.stats()["active_syntheses"] == 1
    await messages.aclose()  # what Serve does when the client cancels the call
    assert tts.stats()["active_syntheses"] == 0 and tts.stats()["aborted_syntheses"] == 1
    assert not sessions[0].responding


async def test_half_close_finishes_the_speech_in_flight() -> None:
    tts = FakeTTS(None, {"realtime_factor": 0.2, "chunk_ms": 50})
    text = "Speech that takes a while to make."
    messages, context, _ = run_stream(models(tts), requests_of(request(text)))
    replies = [reply async for reply in messages]
    assert context.code is None and tts.stats()["aborted_syntheses"] == 0
    assert abs(sum(len(r.audio) for r in replies) // 2 - samples_of(text, 16000)) <= 2
