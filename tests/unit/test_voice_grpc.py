"""The gRPC voice streams in-process: seed 002's StreamAudio and voxray's Converse.

Real Silero VAD and Piper speech, fake models (``tests/protocol_drivers``), no Ray and no
sockets: each session's ``emit`` is the test's. Real gRPC runs in ``tests/serve/test_voice_grpc.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from deployments.backends.fake import FakeLLM, FakeTTS
from serve_app.engine import events as ev
from serve_app.engine.audio.codecs import ALAW, MULAW
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.conversation import Item
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2 as vv
from serve_app.protocols.grpc_api.status import GrpcAbort
from serve_app.protocols.voice_grpc.audio import InputAudio, asr_language, encode
from serve_app.protocols.voice_grpc.converse import ConverseSession
from serve_app.protocols.voice_grpc.gateway import VoiceGatewaySession
from serve_app.protocols.voice_grpc.session import ReplyGate
from serve_app.server.limits import CloseConnection, InvalidEventBudget
from tests.protocol_drivers import Driver, Models, app_config

QUESTION = "What is the capital of France?"
LONG_REPLY = " ".join(f"Sentence number {i} is here." for i in range(40))
EVENT = vw.EventType.Name


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


def slow_models() -> Models:
    """A long reply, spoken slowly enough to talk over."""
    return Models(
        llm=FakeLLM(None, {"reply": LONG_REPLY, "tokens_per_s": 50}),
        tts=FakeTTS(None, {"realtime_factor": 0.5}),
    )


class Client(Driver):
    """One StreamAudio or Converse call, as its client sees it."""

    def __init__(self, cls: Any, vad: SileroVAD, models: Models | None = None, **session: Any) -> None:
        super().__init__()
        self.models = models or Models()
        config = app_config(**session)
        self.withdrawals: list[Any] = []  # what the session asked the stream to drop from its queue
        self.session = cls(config, self.models.clients(), vad.stream(), self._emit, None, self._withdraw)

    async def _emit(self, message: Any) -> None:
        self.record(message)

    def _withdraw(self, unwanted: Any) -> int:
        self.withdrawals.append(unwanted)
        return 0

    async def send(self, **fields: Any) -> None:
        request = vw.ClientMessage if isinstance(self.session, VoiceGatewaySession) else vv.ConverseRequest
        await self.session.handle_request(request(**fields))

    async def speak(self, pcm: bytes, rate: int, realtime: bool = False, field: str = "audio_chunk") -> None:
        step = rate * 20 // 1000 * 2
        for start in range(0, len(pcm), step):
            await self.send(**{field: pcm[start : start + step]})
            await asyncio.sleep(0.02 if realtime else 0)

    def kinds(self) -> list[str]:
        """Each message as one word: its field, or an event's type (gateway) / payload (Converse)."""
        out = []
        for m in self.messages:
            kind = m.WhichOneof("content")
            out.append(EVENT(m.event.type) if kind == "event" else kind)
        return out

    def of(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.messages if m.WhichOneof("content") == kind]

    async def close(self) -> None:
        await self.session.close()


def squeeze(kinds: list[str]) -> list[str]:
    """Runs of the same kind as one (many audio chunks, many text pieces)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


# -- StreamAudio --------------------------------------------------------------------------------


async def test_a_spoken_turn_gets_transcripts_text_audio_and_events_in_order(
    vad: SileroVAD, make_utterance: Any
) -> None:
    client = Client(VoiceGatewaySession, vad)
    try:
        await client.send(config=vw.VoiceConfig(language_code="en-US", session_id="mine", sample_rate=16000))
        await client.speak(
            make_utterance(QUESTION, rate=16000, lead_silence_s=0.3, trail_silence_s=1.0), 16000
        )
        await client.wait(lambda ms: "END_OF_TURN" in client.kinds())
        await client.wait(lambda ms: client.kinds()[-1] == "LISTENING")
        kinds = squeeze(client.kinds())
        spoken = [k for k in kinds if k != "transcript_chunk"]
        assert spoken[:5] == ["LISTENING", "PROCESSING", "llm_response_chunk", "SPEAKING", "audio_chunk"]
        assert spoken[-2:] == ["END_OF_TURN", "LISTENING"]
        assert set(spoken[5:-2]) <= {"llm_response_chunk", "audio_chunk"}
        final = len(kinds) - 1 - kinds[::-1].index("transcript_chunk")  # interims come at pauses
        assert kinds.index("PROCESSING") < final < kinds.index("llm_response_chunk")
        assert client.of("transcript_chunk")[-1] == QUESTION  # interims (at pauses) come before it
        assert "".join(client.of("llm_response_chunk")).startswith(f"You said: {QUESTION}")
        assert client.messages[0].event.message == "Ready"
        assert [m.event.message for m in client.messages if m.event.type == vw.END_OF_TURN] == [""]
        audio = b"".join(client.of("audio_chunk"))
        assert len(audio) > 16_000 and len(audio) % 2 == 0
        assert client.session.engine.settings.language == "en"
    finally:
        await client.close()


async def reply_audio_bytes(vad: SileroVAD, rate: int) -> int:
    """The audio bytes of the reply to one text turn, with the config at ``rate``."""
    client = Client(VoiceGatewaySession, vad, Models(llm=FakeLLM(None, {"reply": "Paris is the capital."})))
    try:
        await client.send(config=vw.VoiceConfig(sample_rate=rate))
        await client.send(text_input="Where is Paris?")
        await client.wait(lambda ms: "END_OF_TURN" in client.kinds())
        return len(b"".join(client.of("audio_chunk")))
    finally:
        await client.close()


async def test_a_text_turn_is_answered_and_audio_comes_at_the_configured_rate(vad: SileroVAD) -> None:
    client = Client(VoiceGatewaySession, vad)
    try:
        await client.send(config=vw.VoiceConfig())
        await client.send(text_input="Hello there")
        await client.wait(lambda ms: client.kinds()[-1:] == ["LISTENING"] and len(ms) > 2)
        kinds = squeeze(client.kinds())
        assert kinds[:5] == ["LISTENING", "PROCESSING", "llm_response_chunk", "SPEAKING", "audio_chunk"]
        assert kinds[-2:] == ["END_OF_TURN", "LISTENING"] and "transcript_chunk" not in kinds
        assert "".join(client.of("llm_response_chunk")).startswith("You said: Hello there")
    finally:
        await client.close()
    at_16k, at_8k, at_48k = [await reply_audio_bytes(vad, rate) for rate in (0, 8000, 48000)]
    assert at_16k == pytest.approx(2 * at_8k, rel=0.02)  # 0 means 16 kHz; both come resampled
    assert at_48k == pytest.approx(3 * at_16k, rel=0.02)


@pytest.mark.parametrize("rate", [8000, 44100])
async def test_speech_at_other_rates_is_heard(vad: SileroVAD, make_utterance: Any, rate: int) -> None:
    client = Client(VoiceGatewaySession, vad)
    try:
        await client.send(config=vw.VoiceConfig(sample_rate=rate))
        await client.speak(make_utterance(QUESTION, rate=rate, lead_silence_s=0.3, trail_silence_s=1.0), rate)
        await client.wait(lambda ms: "END_OF_TURN" in client.kinds())
        assert client.of("transcript_chunk")[-1] == QUESTION
        assert client.session.engine.settings.input_rate == rate
    finally:
        await client.close()


async def test_barge_in_stops_the_reply_and_no_more_of_its_audio_is_sent(
    vad: SileroVAD, make_utterance: Any
) -> None:
    models = slow_models()
    client = Client(VoiceGatewaySession, vad, models, max_audio_lead_ms=300)
    try:
        await client.send(config=vw.VoiceConfig(sample_rate=24000))
        await client.speak(make_utterance(QUESTION, lead_silence_s=0.2, trail_silence_s=0.8), 24000)
        await client.wait(lambda ms: client.kinds().count("audio_chunk") >= 3)
        await client.speak(
            make_utterance("Stop, please.", lead_silence_s=0.1, trail_silence_s=0.0), 24000, True
        )
        await client.wait(lambda ms: "END_OF_TURN" in client.kinds())
        ended = client.kinds().index("END_OF_TURN")
        assert client.messages[ended].event.message == "interrupted"
        after = client.kinds()[ended:]
        assert "audio_chunk" not in after or after.index("SPEAKING") < after.index("audio_chunk")
        # The stopped reply's audio still queued for the client is withdrawn, and only that.
        assert client.withdrawals
        unwanted = client.withdrawals[0]
        assert unwanted(vw.ServerMessage(audio_chunk=b"\0\0"))
        assert not unwanted(vw.ServerMessage(transcript_chunk="Stop, please."))
        await asyncio.sleep(0.2)
        assert (
            models.llm.stats()["active_generations"] == 0 and models.llm.stats()["aborted_generations"] == 1
        )
        assert models.tts.stats()["active_syntheses"] == 0
    finally:
        await client.close()


async def test_a_half_close_answers_the_last_utterance_then_returns(
    vad: SileroVAD, make_utterance: Any
) -> None:
    client = Client(VoiceGatewaySession, vad)
    try:
        await client.send(config=vw.VoiceConfig(sample_rate=24000))
        await client.speak(make_utterance(QUESTION, lead_silence_s=0.3, trail_silence_s=0.0), 24000)
        await asyncio.wait_for(client.session.finish(), 20)
        assert "END_OF_TURN" in client.kinds() and client.of("audio_chunk")
    finally:
        await client.close()


def test_the_reply_gate_drops_a_stopped_replys_late_events() -> None:
    gate, item = ReplyGate(), Item(id="item_a", role="assistant")
    audio = ev.ReplyAudio("resp_a", "item_a", b"\x00\x00", 16000)
    assert gate.passes(ev.ReplyStarted("resp_a", item, True)) and gate.passes(audio)
    gate.stop_active()  # the person started speaking
    assert not gate.passes(audio) and not gate.passes(ev.ReplyText("resp_a", "item_a", "x", True))
    done = ev.ReplyDone("resp_a", item, True, "cancelled", "turn_detected", None, "", 0)
    assert gate.passes(done) and gate.active is None
    assert gate.passes(ev.ReplyStarted("resp_b", item, True)) and gate.passes(
        ev.ReplyAudio("resp_b", "item_a", b"\x00\x00", 16000)
    )


# -- what ends a call, what does not ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "first", "code", "needle"),
    [
        (VoiceGatewaySession, vw.ClientMessage(audio_chunk=b"\x00" * 640), "INVALID_ARGUMENT", "first"),
        (VoiceGatewaySession, vw.ClientMessage(text_input="hi"), "INVALID_ARGUMENT", "first"),
        (VoiceGatewaySession, vw.ClientMessage(), "INVALID_ARGUMENT", "first"),
        (
            VoiceGatewaySession,
            vw.ClientMessage(config=vw.VoiceConfig(sample_rate=4000)),
            "INVALID_ARGUMENT",
            "8000",
        ),
        (
            VoiceGatewaySession,
            vw.ClientMessage(config=vw.VoiceConfig(sample_rate=-1)),
            "INVALID_ARGUMENT",
            "range",
        ),
        (
            VoiceGatewaySession,
            vw.ClientMessage(config=vw.VoiceConfig(language_code="en US!")),
            "INVALID_ARGUMENT",
            "language",
        ),
        (VoiceGatewaySession, vw.ClientMessage(audio_chunk=bytes(1 << 20)), "RESOURCE_EXHAUSTED", "exceeds"),
        (ConverseSession, vv.ConverseRequest(audio=b"\x00\x00"), "INVALID_ARGUMENT", "first"),
        (ConverseSession, vv.ConverseRequest(commit=vv.Commit()), "INVALID_ARGUMENT", "first"),
        (
            ConverseSession,
            vv.ConverseRequest(config=vv.SessionConfig(encoding=9)),
            "INVALID_ARGUMENT",
            "encoding",
        ),
        (
            ConverseSession,
            vv.ConverseRequest(config=vv.SessionConfig(output_sample_rate_hz=500_000)),
            "INVALID_ARGUMENT",
            "output_sample_rate_hz",
        ),
        (
            ConverseSession,
            vv.ConverseRequest(config=vv.SessionConfig(instructions="x" * 20_001)),
            "INVALID_ARGUMENT",
            "instructions",
        ),
    ],
)
async def test_what_the_stream_cannot_survive_ends_it_with_a_status(
    vad: SileroVAD, cls: Any, first: Any, code: str, needle: str
) -> None:
    client = Client(cls, vad)
    with pytest.raises(GrpcAbort) as aborted:
        await client.session.handle_request(first)
    assert aborted.value.code == getattr(grpc.StatusCode, code) and needle in aborted.value.details
    assert client.messages == [] and client.session.engine is None


@pytest.mark.parametrize("cls", [VoiceGatewaySession, ConverseSession])
async def test_a_stream_closed_before_its_config_is_invalid(vad: SileroVAD, cls: Any) -> None:
    with pytest.raises(GrpcAbort) as aborted:
        await Client(cls, vad).session.finish()
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_recoverable_mistakes_are_error_events_until_the_budget_is_spent(vad: SileroVAD) -> None:
    client = Client(VoiceGatewaySession, vad)
    client.session._invalid = InvalidEventBudget(3)
    await client.send(config=vw.VoiceConfig())
    await client.send(config=vw.VoiceConfig())
    await client.send(text_input="   ")
    await client.send(audio_chunk=b"\x01")  # half a sample waits for its other half: no error
    await client.send(audio_chunk=b"\x00" * 3)
    assert [(m.event.type, m.event.message.rsplit("(", 1)[-1]) for m in client.messages[1:]] == [
        (vw.ERROR, "config_already_sent)"),
        (vw.ERROR, "empty_text)"),
    ]
    await client.send(text_input="")
    with pytest.raises(CloseConnection):
        await client.send(text_input="")
    await client.close()


# -- Converse -----------------------------------------------------------------------------------


async def test_converse_spoken_turn_and_barge_in(vad: SileroVAD, make_utterance: Any) -> None:
    client = Client(ConverseSession, vad, slow_models(), max_audio_lead_ms=300)
    try:
        await client.send(config=vv.SessionConfig(sample_rate_hz=24000, output_sample_rate_hz=16000))
        [started] = client.of("session_started")
        assert (started.input_sample_rate_hz, started.output_sample_rate_hz, started.voice) == (
            24000,
            16000,
            "joe",
        )
        await client.speak(
            make_utterance(QUESTION, lead_silence_s=0.2, trail_silence_s=0.8), 24000, field="audio"
        )
        await client.wait(lambda ms: client.kinds().count("response_audio") >= 3)
        speech_item = client.of("speech_started")[0].item_id
        assert [t.item_id for t in client.of("transcript") if t.is_final] == [speech_item]
        await client.speak(
            make_utterance("Stop, please.", lead_silence_s=0.1, trail_silence_s=0.0), 24000, True, "audio"
        )
        await client.wait(lambda ms: client.of("response_done"))
        [done] = client.of("response_done")
        assert done.status == vv.ResponseDone.INTERRUPTED and 0 < len(done.text) < len(LONG_REPLY) / 2
        kinds = client.kinds()
        second_speech = [i for i, k in enumerate(kinds) if k == "speech_started"][1]
        old = [i for i, m in enumerate(client.messages) if m.response_audio.response_id == done.response_id]
        assert old and max(old) < second_speech  # nothing of the old reply after the speech began
    finally:
        await client.close()


async def test_converse_cancel_and_text_turns(vad: SileroVAD) -> None:
    client = Client(ConverseSession, vad, slow_models(), max_audio_lead_ms=300)
    try:
        await client.send(config=vv.SessionConfig(output_encoding=vv.MULAW))
        assert client.of("session_started")[0].output_encoding == vv.MULAW
        await client.send(text="Tell me a long story.")
        await client.wait(lambda ms: client.kinds().count("response_audio") >= 2)
        await client.send(cancel=vv.Cancel())
        [done] = client.of("response_done")
        assert done.status == vv.ResponseDone.CANCELLED
        assert client.kinds()[-1] == "response_done"  # nothing of it after
        audio = b"".join(a.audio for a in client.of("response_audio"))
        assert len(audio) > 1600 and np.frombuffer(audio, np.uint8).std() > 0  # 1 byte a sample
        await client.send(cancel=vv.Cancel())
        assert client.of("error")[-1].code == "response_cancel_not_active"
        texts = client.kinds().count("response_text")
        await client.send(text="Again, please.")
        await client.wait(lambda ms: client.kinds().count("response_text") > texts)
        await client.send(text="No, something else.")  # supersedes the reply in progress
        await client.wait(lambda ms: len(client.of("response_done")) == 2)
        assert client.of("response_done")[1].status == vv.ResponseDone.CANCELLED
    finally:
        await client.close()


async def test_converse_manual_turns_answer_on_commit(vad: SileroVAD, make_utterance: Any) -> None:
    client = Client(ConverseSession, vad)
    try:
        await client.send(config=vv.SessionConfig(sample_rate_hz=16000, manual_turns=True, encoding=vv.ALAW))
        await client.send(commit=vv.Commit())
        assert client.of("error")[-1].code == "input_audio_buffer_commit_empty"
        speech = make_utterance(QUESTION, rate=16000, lead_silence_s=0.3, trail_silence_s=1.0)
        await client.speak(encode(speech, "alaw"), 8000, field="audio")  # 1 byte a sample: 20 ms steps
        await asyncio.sleep(0.2)
        assert "speech_started" not in client.kinds() and "response_done" not in client.kinds()
        await client.send(commit=vv.Commit())
        await client.wait(lambda ms: client.of("response_done"))
        assert [t.text for t in client.of("transcript") if t.is_final] == [QUESTION]
        assert client.of("response_done")[0].status == vv.ResponseDone.COMPLETED
        assert client.of("response_done")[0].text.startswith(f"You said: {QUESTION}")
    finally:
        await client.close()


async def test_converse_commit_with_server_vad_needs_speech_in_progress(vad: SileroVAD) -> None:
    client = Client(ConverseSession, vad)
    try:
        await client.send(config=vv.SessionConfig())
        await client.send(commit=vv.Commit())
        assert client.of("error")[-1].code == "input_audio_buffer_commit_empty"
    finally:
        await client.close()


# -- audio formats ------------------------------------------------------------------------------


def test_g711_encoding_inverts_the_decoding_tables() -> None:
    for encoding, table in (("mulaw", MULAW), ("alaw", ALAW)):
        codes = np.frombuffer(encode(table.astype("<i2").tobytes(), encoding), np.uint8)
        assert np.array_equal(table[codes], table)  # every level encodes to itself
        ramp = np.linspace(-32768, 32767, 5000).astype("<i2")
        decoded = table[np.frombuffer(encode(ramp.tobytes(), encoding), np.uint8)].astype(np.int32)
        assert np.all(np.abs(decoded - ramp) <= np.maximum(16, np.abs(ramp.astype(np.int32)) // 16))


def test_input_audio_joins_split_samples_and_languages_lose_their_region() -> None:
    pcm = InputAudio()
    assert pcm.decode(b"\x01") == b"" and pcm.decode(b"\x02\x03") == b"\x01\x02"
    assert pcm.decode(b"\x04") == b"\x03\x04"
    assert len(InputAudio("mulaw").decode(b"\xff" * 10)) == 20
    assert (asr_language("en-US", "f"), asr_language("", "f"), asr_language("pt_BR", "f")) == (
        "en",
        None,
        "pt",
    )
