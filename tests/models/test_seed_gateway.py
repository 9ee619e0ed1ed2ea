"""voxray as the Riva and LLM servers of seed 002's voice gateway, on the embedded models.

``tests/clients/riva/seed_gateway_calls.py`` makes the calls that gateway makes, with its
arguments: streaming recognition through ``riva.client`` (LINEAR_PCM at the WAV's rate, en-US,
interim results, verbatim), the final transcript to ``LLM_SERVICE_URL`` through the ``openai``
SDK (streaming), and each sentence of the answer through ``SynthesizeOnline`` with an empty
voice name. Both client generations: 2.28.0 (bidirectional ``SynthesizeOnline``) and 2.24.0
with openai 2.14.0 (server-streaming, as the gateway's own lock file calls it). Nothing in
the gateway's configuration changes but the two addresses.

Int8 Whisper differs between CPUs, so the checks are bounds: the question heard with a word
error rate bound, and the spoken answer transcribed back close to the answer's text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.wer import word_error_rate
from serve_app.engine.audio.pcm import write_wav
from tests.riva_clients import require_riva_clients, seed_gateway_calls

pytestmark = pytest.mark.models

QUESTIONS = ("What is the capital of France?", "Name three colours of the rainbow.")
RATE = 16_000  # the gateway's own test client sends the WAV's rate; 16 kHz is its default


def grpc_port(server: Any) -> int:
    """The port of the server's gRPC ingress."""
    return int(server.grpc_target.rpartition(":")[2])


@pytest.mark.parametrize("venv", ["new", "old"])
def test_a_spoken_question_through_the_gateway_calls_gets_a_spoken_answer(
    grpc_models_server: Any, make_utterance: Any, whisper_asr: Any, tmp_path: Path, venv: str
) -> None:
    require_riva_clients()
    heard, references, answers, spoken_back = [], [], [], []
    for index, question in enumerate(QUESTIONS):
        wav = tmp_path / f"question-{index}.wav"
        write_wav(wav, make_utterance(question, rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0), RATE)
        run = seed_gateway_calls(
            grpc_port(grpc_models_server),
            wav,
            llm_url=f"http://127.0.0.1:{grpc_models_server.port}/v1",
            env={"LLM_MAX_TOKENS": "60"},  # the seed's 1024 would only make the test slower
            venv=venv,
            out_wav=tmp_path / f"answer-{index}.wav",
            timeout_s=300,
        )
        run.assert_ok()
        summary = run.summary
        # (Interim results were asked for, but the gateway sends its audio about 25 times faster
        # than real time, and finals come first then: there may be none.)
        assert summary["answer"].strip(), summary
        assert run.sample_rate == RATE and len(run.audio) > RATE, summary  # over half a second
        heard.append(summary["transcript"])
        references.append(question)
        answers.append(summary["answer"])
        spoken_back.append(asyncio.run(whisper_asr.transcribe(run.audio, RATE, "en")).text)
    assert word_error_rate(references, heard) <= 0.35, list(zip(references, heard, strict=True))
    # The spoken answer says the answer's text (Piper, heard back by Whisper).
    assert word_error_rate(answers, spoken_back) <= 0.5, list(zip(answers, spoken_back, strict=True))
