"""Talk to the Speechmatics RT adapter in-process, as an RT client would: fake models, real VAD.

No Ray and no sockets: the adapter's emit function is the driver's, so a test reads exactly
the messages a client would get, in order.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave
from typing import Any

from deployments.backends.fake import FakeASR, FakeLLM, FakeSpeaker, FakeTTS
from serve_app.config import AppConfig
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.speechmatics_rt.adapter import RTSession

WAIT_S = 20.0


def rt_config(**transcription: Any) -> AppConfig:
    """A config with fake backends, with ``transcription`` policy overrides."""
    return AppConfig.model_validate(
        {
            "asr": {"backend": "fake"},
            "llm": {"backend": "fake"},
            "tts": {"backend": "fake"},
            "speaker": {"backend": "fake"},
            "transcription": {"ending_grace_s": 0.0, **transcription},
        }
    )


def wav_file(pcm16: bytes, rate: int) -> bytes:
    """``pcm16`` as the bytes of a mono 16-bit WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return out.getvalue()


class RTDriver:
    """One RT session with fake ASR (``transcripts``) and the fake speaker model.

    Args:
        vad: The shared Silero model.
        transcripts: What the fake ASR says, call after call.
        speaker: Give the server a speaker model (diarization possible).
        path_language: The ``/v2/<language>`` part of the URL.
    """

    def __init__(
        self,
        vad: SileroVAD,
        transcripts: list[str] | None = None,
        speaker: bool = True,
        path_language: str | None = None,
        **transcription: Any,
    ) -> None:
        self.messages: list[dict[str, Any]] = []
        self.asr = FakeASR(None, {"transcripts": transcripts or ["hello there general kenobi"]})
        models = ModelClients(
            self.asr, FakeLLM(None, {}), FakeTTS(None, {}), FakeSpeaker(None, {}) if speaker else None
        )
        self.closed_after: float | None = None
        self.session = RTSession(
            rt_config(**transcription), models, vad.stream(), self._emit, self._end_soon, path_language
        )

    async def _emit(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def _end_soon(self, after_s: float) -> None:
        self.closed_after = after_s

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send one client message (a dict is sent as JSON text)."""
        raw = json.dumps(message) if isinstance(message, dict) else message
        await self.session.handle_message(raw)

    async def start(self, audio_format: dict[str, Any] | None = None, **config: Any) -> None:
        """``StartRecognition`` (raw pcm_s16le 16 kHz unless told otherwise)."""
        fmt = audio_format or {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
        await self.send(
            {
                "message": "StartRecognition",
                "audio_format": fmt,
                "transcription_config": {"language": "en", **config},
            }
        )

    async def stream(self, data: bytes, chunk: int = 4096, realtime_rate: int | None = None) -> int:
        """Send ``data`` in binary frames (paced at ``realtime_rate`` samples/s if given)."""
        frames = 0
        for at in range(0, len(data), chunk):
            await self.send(data[at : at + chunk])
            frames += 1
            if realtime_rate:
                await asyncio.sleep(chunk / 2 / realtime_rate)
        return frames

    async def finish(self, frames: int) -> None:
        """``EndOfStream`` and wait for ``EndOfTranscript`` or an ``Error``."""
        await self.send({"message": "EndOfStream", "last_seq_no": frames})
        await self.wait_for(lambda: self.of("EndOfTranscript") or self.of("Error"))

    async def wait_for(self, predicate: Any, timeout: float = WAIT_S) -> Any:
        async def poll() -> Any:
            while not (result := predicate()):
                await asyncio.sleep(0.01)
            return result

        return await asyncio.wait_for(poll(), timeout)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Messages of one kind, in order."""
        return [m for m in self.messages if m["message"] == kind]

    def final_words(self) -> list[dict[str, Any]]:
        """Every final result (word or punctuation), in order."""
        return [r for m in self.of("AddTranscript") for r in m["results"]]

    async def close(self) -> None:
        await self.session.close()
