"""OpenAI Realtime transcription sessions through the official ``openai`` SDK, unmodified.

The real Ray Serve app with fake ASR and the fake speaker model: the SDK parses every server
event with its own models, so a field of the wrong shape fails here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import deployed_app

APP = "transcribeapp"
ARGS: dict[str, Any] = {
    # One transcript: the fake answers partial decodes too, so a list would rotate among them.
    "asr": {"backend": "fake", "options": {"transcripts": ["good words said here"]}},
    "llm": {"backend": "fake"},
    "tts": {"backend": "fake"},
    "speaker": {"backend": "fake"},
}


@pytest.fixture(scope="module")
def base_url(serve_instance: str) -> Iterator[str]:
    with deployed_app(APP, ARGS) as prefix:
        yield f"{serve_instance}{prefix}/v1"


async def test_the_openai_sdk_transcribes_with_speakers_and_no_replies(
    base_url: str, make_utterance: Any
) -> None:
    client = AsyncOpenAI(api_key="unused-locally", websocket_base_url=base_url)
    audio = make_utterance("Good morning to you.", lead_silence_s=0.3, trail_silence_s=1.0) + make_utterance(
        "And a very good day.", lead_silence_s=0.0, trail_silence_s=1.0
    )
    async with client.realtime.connect(model="voxray", extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        await connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {"transcription": {"model": "gpt-4o-transcribe-diarize", "language": "en"}}
                },
            }
        )
        for start in range(0, len(audio), 9600):
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(audio[start : start + 9600]).decode()
            )
        types: list[str] = []
        completed: list[str] = []
        speakers: set[str] = set()
        async for event in connection:
            types.append(event.type)
            if event.type == "error":
                raise AssertionError(event.error)
            if event.type == "conversation.item.input_audio_transcription.segment":
                speakers.add(event.speaker)
            if event.type == "conversation.item.input_audio_transcription.completed":
                completed.append(event.transcript)
                if len(completed) == 2:
                    break
    assert completed == ["good words said here"] * 2
    assert "session.updated" in types and "input_audio_buffer.committed" in types
    assert "conversation.item.input_audio_transcription.delta" in types
    assert speakers and speakers <= {"S1", "S2"}
    assert not any(t.startswith("response.") for t in types)
