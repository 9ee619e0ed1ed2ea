"""End to end on the embedded CPU models: the real Serve app of configs/local.yaml.

Speech in (synthesized with the project's TTS), speech out, checked by transcribing the
reply with the app's own ASR; the official openai SDK; concurrent sessions; barge-in.

What Whisper hears may differ by a word between machines (int8 inference differs between
x86 CPUs: on some it hears Piper's "What is the capital of France?" as "... of friends?"),
so a transcript may be one word off; but the LLM's answer turns on the country, so the
questions ask about countries whose names Whisper base heard right in every variant tried
(int8 and float32, short and full window, resampled, faster and slower, with noise).
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import AsyncOpenAI
from ray import serve

from bench.wer import normalize_words, word_errors
from serve_app.engine.audio.pcm import resample_pcm16
from tests.conftest import deploy_app
from tests.realtime_client import RealtimeTestClient

pytestmark = pytest.mark.models

APP = "localapp"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"
QUESTION = "What is the capital of Italy?"
FOLLOW_UP = "And what is the capital of Germany?"


@pytest.fixture(scope="module")
def app_url(serve_instance: str) -> str:
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    return f"{serve_instance}{deploy_app(APP, args)}/v1/realtime"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def assert_heard(question: str, heard: str, country: str) -> None:
    """``heard`` is ``question`` but for one word at most, and names ``country``."""
    assert word_errors(question, heard) <= 1 and country in normalize_words(heard), (question, heard)


def transcribe(pcm16_24k: bytes) -> str:
    handle = serve.get_deployment_handle("ASR", APP)
    pcm16k = resample_pcm16(pcm16_24k, 24_000, 16_000)
    return handle.transcribe.remote(pcm16k, 16_000, "en").result().text


async def test_spoken_question_gets_a_spoken_answer_that_matches_its_transcript(
    app_url: str, make_utterance: Any
) -> None:
    async with RealtimeTestClient(app_url) as client:
        await client.stream_audio(make_utterance(QUESTION, lead_silence_s=0.3, trail_silence_s=1.2))
        done = await client.wait_for("response.done", timeout=120)
        assert done["response"]["status"] == "completed", done
        heard = client.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
        assert_heard(QUESTION, heard, "italy")
        said = client.reply_text()
        assert "rome" in words(said)
        audio = client.reply_audio()
        assert len(audio) / 2 / 24_000 > 0.5
        # The reply audio says what the transcript says: transcribe it with the app's own ASR.
        spoken = " ".join(words(await asyncio.to_thread(transcribe, audio)))
        expected = " ".join(words(said))
        # Character-level similarity: tolerant of ASR merges like "France is" -> "Francis".
        assert difflib.SequenceMatcher(None, expected, spoken).ratio() >= 0.8, (expected, spoken)
        # The first audio left before the LLM finished: stage timings are in the metadata.
        metadata = done["response"]["metadata"]
        for key in ("voxray.asr_ms", "voxray.llm_first_token_ms", "voxray.tts_first_chunk_ms"):
            assert float(metadata[key]) > 0


async def test_official_sdk_conversation_keeps_history(app_url: str, make_utterance: Any) -> None:
    client = AsyncOpenAI(api_key="unused-locally", websocket_base_url=app_url.removesuffix("/realtime"))
    async with client.realtime.connect(model="voxray") as connection:
        assert (await connection.recv()).type == "session.created"
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a terse assistant. Answer in at most ten words.",
                "audio": {"output": {"voice": "joe"}},
            }
        )
        replies = []
        for question in (QUESTION, FOLLOW_UP):
            audio = make_utterance(question, lead_silence_s=0.2, trail_silence_s=1.0)
            for start in range(0, len(audio), 4800):
                chunk = base64.b64encode(audio[start : start + 4800]).decode()
                await connection.input_audio_buffer.append(audio=chunk)
            transcript = ""
            async for event in connection:
                if event.type == "error":
                    raise AssertionError(event.error)
                if event.type == "response.output_audio_transcript.delta":
                    transcript += event.delta
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
            replies.append(transcript)
        assert "rome" in words(replies[0])
        assert "berlin" in words(replies[1])


async def test_two_concurrent_sessions_each_get_their_own_answer(app_url: str, make_utterance: Any) -> None:
    questions = {"a": QUESTION, "b": "What is the capital of Germany?"}
    async with RealtimeTestClient(app_url) as a, RealtimeTestClient(app_url) as b:
        clients = {"a": a, "b": b}
        await asyncio.gather(
            *(
                c.stream_audio(make_utterance(questions[k], lead_silence_s=0.2, trail_silence_s=1.2))
                for k, c in clients.items()
            )
        )
        await asyncio.gather(*(c.wait_for("response.done", timeout=180) for c in clients.values()))
        heard = {
            k: c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
            for k, c in clients.items()
        }
        assert_heard(questions["a"], heard["a"], "italy")
        assert_heard(questions["b"], heard["b"], "germany")
        assert "rome" in words(a.reply_text())
        assert "berlin" in words(b.reply_text())


async def test_barge_in_stops_the_real_engines(app_url: str, make_utterance: Any) -> None:
    llm = serve.get_deployment_handle("LLM", APP)
    before = await llm.stats.remote()
    async with RealtimeTestClient(app_url) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "When asked to count, write out every number in words.",
                    "max_output_tokens": 400,
                },
            }
        )
        story = make_utterance(
            "Tell me a long story about a dragon.", lead_silence_s=0.2, trail_silence_s=1.0
        )
        await client.stream_audio(story)
        await client.wait_for("response.output_audio.delta", timeout=120)
        # Under 200 ms of trailing silence: no pause, so no speculative answer to "Stop." starts.
        await client.stream_audio(make_utterance("Stop.", lead_silence_s=0.0, trail_silence_s=0.1))
        done = await client.wait_for("response.done", timeout=60)
        assert done["response"]["status"] == "cancelled"
        await asyncio.sleep(1.0)
        after = await llm.stats.remote()
        assert after["active_generations"] == 0
        assert after["aborted_generations"] >= before["aborted_generations"] + 1
        tokens, cpu = after["tokens_generated"], after["process_cpu_s"]
        await asyncio.sleep(1.0)
        idle = await llm.stats.remote()
        assert idle["tokens_generated"] == tokens
        # Generating uses both cores (~2 CPU-s per s); an aborted engine uses next to none.
        assert idle["process_cpu_s"] - cpu < 0.3
        tts = await serve.get_deployment_handle("TTS", APP).stats.remote()
        assert tts["active_syntheses"] == 0
        assistant_text = client.reply_text(done["response"]["id"])
        item_text = done["response"]["output"][0]["content"][0]["transcript"]
        assert item_text == assistant_text  # the history keeps only what was sent
