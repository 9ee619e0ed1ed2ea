"""Voice-to-voice over real gRPC: seed 002's StreamAudio and voxray's Converse, behind HAProxy.

The client is written against the generated stubs (``bench.grpc_voice.VoiceCall``), as the
seed's own clients are; the models are the scripted fakes of the shared ``grpc_server``
(any speech is heard as the question; the reply is "You said: {user} Here is my answer.").
Hostile input is in ``test_fuzz_voice_grpc.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from bench.grpc_voice import GATEWAY_FRAME_BYTES, GATEWAY_RATE, VoiceCall
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2 as vv
from tests.serve.haproxy_server import HAProxyServer

QUESTION = "What is the capital of France?"
TIMEOUT_S = 60.0


def question(make_utterance: Callable[..., bytes], text: str = QUESTION, trail_s: float = 1.0) -> bytes:
    return make_utterance(text, rate=GATEWAY_RATE, lead_silence_s=0.3, trail_silence_s=trail_s)


async def started(call: VoiceCall) -> None:
    await call.send(config=vw.VoiceConfig(language_code="en-US", session_id="test", sample_rate=GATEWAY_RATE))
    await call.wait(lambda c: c.kinds() == ["LISTENING"], TIMEOUT_S)


async def test_a_spoken_question_gets_transcript_text_audio_and_end_of_turn(
    grpc_server: HAProxyServer, make_utterance: Callable[..., bytes]
) -> None:
    async with VoiceCall(grpc_server.grpc_target) as call:
        await started(call)
        await call.stream(question(make_utterance), GATEWAY_FRAME_BYTES, realtime=False)
        await call.wait(lambda c: "END_OF_TURN" in c.kinds(), TIMEOUT_S)
        await call.done_writing()
        assert await call.ended(TIMEOUT_S) == grpc.StatusCode.OK, call.details
    kinds = call.kinds()
    final = len(kinds) - 1 - kinds[::-1].index("transcript_chunk")  # interim ones come at pauses
    assert kinds[0] == "LISTENING" and kinds.index("PROCESSING") < final < kinds.index("llm_response_chunk")
    assert call.of("transcript_chunk")[-1] == QUESTION
    assert "".join(call.of("llm_response_chunk")) == f"You said: {QUESTION} Here is my answer."
    assert kinds.index("SPEAKING") < kinds.index("audio_chunk") < kinds.index("END_OF_TURN")
    audio = b"".join(call.of("audio_chunk"))
    reply_chars = len("You said: What is the capital of France?") + len("Here is my answer.")
    assert len(audio) / 2 / GATEWAY_RATE > 0.8 * reply_chars * 0.060  # the fake TTS: 60 ms a character
    assert kinds[-2:] == ["END_OF_TURN", "LISTENING"]


async def test_a_text_input_turn_is_answered_in_text_and_audio(grpc_server: HAProxyServer) -> None:
    async with VoiceCall(grpc_server.grpc_target) as call:
        await started(call)
        await call.send(text_input="Hello there")
        await call.wait(lambda c: "END_OF_TURN" in c.kinds(), TIMEOUT_S)
    assert "".join(call.of("llm_response_chunk")) == "You said: Hello there Here is my answer."
    assert call.kinds()[1] == "PROCESSING" and "transcript_chunk" not in call.kinds()
    assert call.of("audio_chunk") and call.messages[call.kinds().index("END_OF_TURN")].event.message == ""


async def test_speaking_over_the_reply_stops_it_and_no_more_of_it_is_sent(
    grpc_server: HAProxyServer, make_utterance: Callable[..., bytes]
) -> None:
    async with VoiceCall(grpc_server.grpc_target) as call:
        await started(call)
        await call.stream(question(make_utterance), GATEWAY_FRAME_BYTES, realtime=False)
        await call.wait(lambda c: "audio_chunk" in c.kinds(), TIMEOUT_S)
        await call.stream(question(make_utterance, "Stop, please."), GATEWAY_FRAME_BYTES, realtime=False)
        await call.wait(lambda c: c.kinds().count("END_OF_TURN") >= 2, TIMEOUT_S)
    kinds = call.kinds()
    first_end = kinds.index("END_OF_TURN")
    assert call.messages[first_end].event.message == "interrupted"
    old_audio = b"".join(call.of("audio_chunk")[: kinds[:first_end].count("audio_chunk")])
    assert len(old_audio) / 2 / GATEWAY_RATE < 3.0  # well short of the whole reply (3.5 s)
    after = kinds[first_end:]
    assert after.index("SPEAKING") < after.index("audio_chunk")  # the next audio is the new reply's
    assert call.messages[first_end + after.index("END_OF_TURN", 1)].event.message == ""


async def test_converse_answers_over_real_grpc_in_mulaw(
    grpc_server: HAProxyServer, make_utterance: Callable[..., bytes]
) -> None:
    async with VoiceCall(grpc_server.grpc_target, rpc="Converse") as call:
        config = vv.SessionConfig(
            sample_rate_hz=GATEWAY_RATE, output_sample_rate_hz=8000, output_encoding=vv.MULAW
        )
        await call.send(config=config)
        await call.wait(lambda c: c.of("session_started"), TIMEOUT_S)
        await call.stream(question(make_utterance), GATEWAY_FRAME_BYTES, realtime=False, field="audio")
        await call.wait(lambda c: c.of("response_done"), TIMEOUT_S)
        await call.send(cancel=vv.Cancel())
        await call.wait(lambda c: c.of("error"), TIMEOUT_S)
        await call.done_writing()
        assert await call.ended(TIMEOUT_S) == grpc.StatusCode.OK
    kinds = call.kinds()
    assert kinds.index("speech_started") < kinds.index("speech_stopped") < kinds.index("response_audio")
    assert [t.text for t in call.of("transcript") if t.is_final] == [QUESTION]
    [done] = call.of("response_done")
    assert (
        done.status == vv.ResponseDone.COMPLETED and done.text == f"You said: {QUESTION} Here is my answer."
    )
    audio = b"".join(a.audio for a in call.of("response_audio"))
    assert len(audio) / 8000 > 2.5  # mu-law: one byte a sample, at 8 kHz
    assert call.of("error")[0].code == "response_cancel_not_active"
