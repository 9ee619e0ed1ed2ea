"""Talk to one protocol adapter in-process, as its client would, with fake models and real VAD.

The same turn scenarios run through every wire protocol (``tests/unit/test_engine_turns.py``):
each driver speaks PCM audio, collects what the adapter sends, and reads replies back in a
protocol-neutral form (:class:`Reply`). No Ray and no sockets: the adapter's emit functions
are the driver's.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS
from serve_app.config import AppConfig
from serve_app.engine.audio.pcm import resample_pcm16
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.flow.adapter import FlowSession
from serve_app.protocols.realtime.adapter import RealtimeSession

RATE = 24_000  # what the scenarios speak; each driver converts to its protocol's format
WAIT_S = 20.0


@dataclass
class Reply:
    """One assistant reply as any protocol shows it."""

    status: str  # completed | interrupted
    text: str
    audio_bytes: int


@dataclass
class Models:
    """Fake models for one scenario."""

    asr: Any = None
    llm: Any = None
    tts: Any = None

    def clients(self) -> ModelClients:
        self.asr = self.asr or FakeASR(None, {"transcripts": ["What is the capital of France?"]})
        self.llm = self.llm or FakeLLM(None, {})
        self.tts = self.tts or FakeTTS(None, {})
        return ModelClients(self.asr, self.llm, self.tts)


def app_config(**session: Any) -> AppConfig:
    """A config for fake backends, with ``session`` overrides."""
    return AppConfig.model_validate(
        {
            "asr": {"backend": "fake"},
            "llm": {"backend": "fake"},
            "tts": {"backend": "fake"},
            "session": {"max_audio_lead_ms": 0, **session},
        }
    )


@dataclass
class Driver:
    """Base: a message log with waiting, and the scenario-facing API."""

    messages: list[Any] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, message: Any) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait(self, predicate: Any, timeout: float = WAIT_S) -> Any:
        """Wait until ``predicate(messages)`` is truthy; returns its value."""

        async def poll() -> Any:
            while not (value := predicate(self.messages)):
                self._changed.clear()
                await self._changed.wait()
            return value

        return await asyncio.wait_for(poll(), timeout)


class RealtimeDriver(Driver):
    """An OpenAI Realtime client."""

    name = "realtime"

    def __init__(self, vad: SileroVAD, models: Models, **session: Any) -> None:
        super().__init__()
        self.session = RealtimeSession(app_config(**session), models.clients(), vad.stream(), self._emit)

    async def _emit(self, event: dict[str, Any]) -> None:
        self.record(json.loads(json.dumps(event)))

    async def start(self) -> None:
        await self.session.start()

    async def speak(self, pcm: bytes, realtime: bool = False) -> None:
        frame = RATE * 20 // 1000 * 2
        for start in range(0, len(pcm), frame):
            audio = base64.b64encode(pcm[start : start + frame]).decode()
            await self.session.handle_message(
                json.dumps({"type": "input_audio_buffer.append", "audio": audio})
            )
            await asyncio.sleep(0.02 if realtime else 0)

    def _replies(self, messages: list[dict[str, Any]]) -> list[Reply]:
        replies, audio = [], 0
        for m in messages:
            if m["type"] == "response.output_audio.delta":
                audio += len(base64.b64decode(m["delta"]))
            elif m["type"] == "response.done":
                status = "completed" if m["response"]["status"] == "completed" else "interrupted"
                output = m["response"]["output"]
                text = (
                    output[0]["content"][0].get("transcript", "") if output and output[0]["content"] else ""
                )
                replies.append(Reply(status, text or "", audio))
                audio = 0
        return replies

    async def replies(self, count: int = 1) -> list[Reply]:
        return await self.wait(lambda ms: (r := self._replies(ms)) and len(r) >= count and r)

    def transcripts(self) -> list[str]:
        return [m["transcript"] for m in self.messages if m["type"].endswith("transcription.completed")]

    def said_speech_started(self) -> int:
        return sum(m["type"] == "input_audio_buffer.speech_started" for m in self.messages)

    async def close(self) -> None:
        await self.session.close()


class FlowDriver(Driver):
    """A Speechmatics Flow client (16 kHz pcm_s16le in, like the CLI)."""

    name = "flow"
    CLIENT_RATE = 16_000

    def __init__(self, vad: SileroVAD, models: Models, **session: Any) -> None:
        super().__init__()
        self.ended_after: float | None = None
        self.session = FlowSession(
            app_config(**session),
            models.clients(),
            vad.stream(),
            self._emit,
            self._send_bytes,
            self._end_soon,
        )

    async def _emit(self, message: dict[str, Any]) -> None:
        self.record(json.loads(json.dumps(message)))

    async def _send_bytes(self, data: bytes) -> None:
        self.record(bytes(data))

    def _end_soon(self, after_s: float) -> None:
        self.ended_after = after_s

    async def start(self, template_id: str = "default", **extra: Any) -> None:
        await self.session.start()
        start = {"message": "StartConversation", "conversation_config": {"template_id": template_id}, **extra}
        start.setdefault(
            "audio_format", {"type": "raw", "encoding": "pcm_s16le", "sample_rate": self.CLIENT_RATE}
        )
        await self.session.handle_message(json.dumps(start))

    async def speak(self, pcm: bytes, realtime: bool = False) -> None:
        pcm16k = resample_pcm16(pcm, RATE, self.CLIENT_RATE)
        for start in range(0, len(pcm16k), 256):
            await self.session.handle_message(pcm16k[start : start + 256])
            await asyncio.sleep(256 / 2 / self.CLIENT_RATE if realtime else 0)

    def json_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict)]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.json_messages() if m["message"] == kind]

    @staticmethod
    def _replies(messages: list[Any], final: bool) -> list[Reply]:
        """Phrases grouped into replies: a reply ends at an interruption or the next transcript."""
        replies: list[Reply] = []
        text: list[str] = []
        audio = 0
        for m in [*messages, None] if final else messages:
            if isinstance(m, bytes):
                audio += len(m)
                continue
            kind = m["message"] if m is not None else "end"
            if kind in ("ResponseCompleted", "ResponseInterrupted"):
                text.append(m["content"])
            if kind == "ResponseInterrupted" or (
                kind in ("AddTranscript", "ConversationEnded", "end") and text
            ):
                replies.append(
                    Reply(
                        "interrupted" if kind == "ResponseInterrupted" else "completed", " ".join(text), audio
                    )
                )
                text, audio = [], 0
        return replies

    async def replies(self, count: int = 1) -> list[Reply]:
        """The replies, once ``count`` are over (the session is no longer replying)."""

        def over(messages: list[Any]) -> list[Reply] | None:
            replies = self._replies(messages, final=not self.session.responding)
            return replies if len(replies) >= count else None

        return await self.wait(over)

    def transcripts(self) -> list[str]:
        return [m["metadata"]["transcript"] for m in self.of("AddTranscript")]

    async def close(self) -> None:
        await self.session.close()
