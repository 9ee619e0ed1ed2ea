"""OpenAI Realtime transcription sessions in-process: real VAD on Piper speech, fake models.

The official ``openai`` SDK runs against a served app in
``tests/serve/test_realtime_transcription_sdk.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from deployments.backends.fake import FakeASR, FakeLLM, FakeSpeaker, FakeTTS
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.realtime.transcription import TranscriptionSession
from tests.rt_driver import rt_config

RATE = 24_000


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


class Driver:
    def __init__(self, vad: SileroVAD, transcripts: list[str]) -> None:
        self.events: list[dict[str, Any]] = []
        models = ModelClients(
            FakeASR(None, {"transcripts": transcripts}),
            FakeLLM(None, {}),
            FakeTTS(None, {}),
            FakeSpeaker(None, {}),
        )
        self.session = TranscriptionSession(rt_config(), models, vad.stream(), self._emit)

    async def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.session.handle_message(event if isinstance(event, str) else json.dumps(event))

    async def speak(self, pcm: bytes, chunk: int = 4800) -> None:
        for at in range(0, len(pcm), chunk):
            audio = base64.b64encode(pcm[at : at + chunk]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        async def poll() -> list[dict[str, Any]]:
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.01)
            return self.of(kind)

        return await asyncio.wait_for(poll(), 20)


async def test_each_utterance_is_committed_and_transcribed_with_speakers(
    vad: SileroVAD, make_utterance: Any
) -> None:
    # One transcript: the fake answers partial decodes too, so a list would rotate among them.
    driver = Driver(vad, ["good words said here"])
    await driver.session.start()
    assert driver.events[0]["type"] == "session.created"
    assert driver.events[0]["session"]["type"] == "transcription"
    await driver.send(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {"transcription": {"model": "gpt-4o-transcribe-diarize", "language": "en"}}
                },
            },
        }
    )
    updated = driver.of("session.updated")[0]["session"]
    assert updated["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe-diarize"
    first = make_utterance("Good morning to you.", rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0)
    second = make_utterance("And a very good day.", rate=RATE, lead_silence_s=0.0, trail_silence_s=1.0)
    await driver.speak(first + second)
    completed = await driver.wait_for("conversation.item.input_audio_transcription.completed", 2)
    assert [c["transcript"] for c in completed] == ["good words said here"] * 2
    committed = driver.of("input_audio_buffer.committed")
    assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    assert len(driver.of("input_audio_buffer.speech_started")) == 2
    for item in completed:
        deltas = [
            d["delta"]
            for d in driver.of("conversation.item.input_audio_transcription.delta")
            if d["item_id"] == item["item_id"]
        ]
        assert "".join(deltas) == item["transcript"]  # deltas only ever append
        assert item["usage"]["type"] == "duration" and item["usage"]["seconds"] > 0.5
    segments = driver.of("conversation.item.input_audio_transcription.segment")
    assert {s["speaker"] for s in segments} <= {"S1", "S2"} and segments
    assert not driver.of("response.created") and not driver.of("error")
    await driver.session.close()


async def test_manual_commit_without_turn_detection(vad: SileroVAD, make_utterance: Any) -> None:
    driver = Driver(vad, ["hello there"])
    await driver.session.start()
    await driver.send(
        {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
        }
    )
    assert driver.of("session.updated")[0]["session"]["audio"]["input"]["turn_detection"] is None
    await driver.speak(make_utterance("Hello there.", rate=RATE, lead_silence_s=0.3, trail_silence_s=2.0))
    await asyncio.sleep(0.3)
    assert not driver.of("input_audio_buffer.committed")  # no server VAD: nothing ends by itself
    await driver.send({"type": "input_audio_buffer.commit"})
    [completed] = await driver.wait_for("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "hello there"
    assert not driver.of("input_audio_buffer.speech_started")
    await driver.session.close()


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"type": "response.create"}, "unsupported_event_type"),
        ("{broken", "invalid_json"),
        ({"type": "input_audio_buffer.append", "audio": "!!!"}, "invalid_value"),
        ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value"),
    ],
)
async def test_bad_events_get_an_error_and_the_session_goes_on(
    vad: SileroVAD, event: dict[str, Any] | str, code: str
) -> None:
    driver = Driver(vad, ["x"])
    await driver.session.start()
    await driver.send(event)
    [error] = driver.of("error")
    assert error["error"]["code"] == code
    await driver.send({"type": "session.update", "session": {"type": "transcription"}})
    assert driver.of("session.updated")
    await driver.session.close()
