"""Seed 002's StreamAudio on the embedded models: a spoken question gets a spoken answer.

Against ``grpc_models_server`` (``configs/local.yaml`` behind HAProxy, real gRPC). The
answer's audio is transcribed back with Whisper in this process; int8 Whisper differs
between CPUs, so the checks are bounds (word errors), never one exact word.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from bench.grpc_voice import GATEWAY_FRAME_BYTES, GATEWAY_RATE, VoiceCall
from bench.wer import normalize_words, word_error_rate, word_errors
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw

pytestmark = pytest.mark.models

QUESTION = "What is the capital of Italy?"
LONG_QUESTION = "Can you tell me a little about the city of Rome?"
TIMEOUT_S = 300.0  # a cold 2-core machine


async def ask(target: str, speech: bytes) -> VoiceCall:
    """Config, the question at 16 kHz, and its whole reply; the call half-closed and ended."""
    async with VoiceCall(target) as call:
        await call.send(config=vw.VoiceConfig(language_code="en-US", sample_rate=GATEWAY_RATE))
        await call.stream(speech, GATEWAY_FRAME_BYTES, realtime=True)
        await call.wait(lambda c: "END_OF_TURN" in c.kinds(), TIMEOUT_S)
        await call.done_writing()
        await call.ended(TIMEOUT_S)
    return call


async def test_a_spoken_question_gets_a_spoken_answer(
    grpc_models_server: Any, whisper_asr: Any, make_utterance: Callable[..., bytes]
) -> None:
    speech = make_utterance(QUESTION, rate=GATEWAY_RATE, lead_silence_s=0.3, trail_silence_s=1.0)
    call = await ask(grpc_models_server.grpc_target, speech)
    assert call.code == grpc.StatusCode.OK, call.details
    heard = call.of("transcript_chunk")[-1]
    assert word_errors(QUESTION, heard) <= 1 and "italy" in normalize_words(heard), heard
    said = "".join(call.of("llm_response_chunk"))
    audio = b"".join(call.of("audio_chunk"))
    assert len(normalize_words(said)) >= 3 and len(audio) / 2 / GATEWAY_RATE > 1.0, (said, len(audio))
    transcript = await whisper_asr.transcribe(audio, GATEWAY_RATE, "en")
    assert word_error_rate(said, transcript.text) <= 0.35, (said, transcript.text)
    assert call.kinds().index("SPEAKING") < call.kinds().index("audio_chunk")


async def test_speaking_over_the_answer_interrupts_it(
    grpc_models_server: Any, make_utterance: Callable[..., bytes]
) -> None:
    async with VoiceCall(grpc_models_server.grpc_target) as call:
        await call.send(config=vw.VoiceConfig(language_code="en-US", sample_rate=GATEWAY_RATE))
        question = make_utterance(LONG_QUESTION, rate=GATEWAY_RATE, lead_silence_s=0.3, trail_silence_s=1.0)
        await call.stream(question, GATEWAY_FRAME_BYTES, realtime=True)
        await call.wait(lambda c: "audio_chunk" in c.kinds(), TIMEOUT_S)
        stop = make_utterance("Stop, please.", rate=GATEWAY_RATE, lead_silence_s=0.1, trail_silence_s=1.0)
        await call.stream(stop, GATEWAY_FRAME_BYTES, realtime=False)
        await call.wait(lambda c: "END_OF_TURN" in c.kinds(), TIMEOUT_S)
        kinds = call.kinds()
        first_end = kinds.index("END_OF_TURN")
        assert call.messages[first_end].event.message == "interrupted", kinds
        # Ready, after the interrupted reply, and after "Stop, please." (answered or not)
        await call.wait(lambda c: c.kinds().count("LISTENING") >= 3, TIMEOUT_S)
    after = call.kinds()[first_end:]
    assert "audio_chunk" not in after or after.index("SPEAKING") < after.index("audio_chunk")
