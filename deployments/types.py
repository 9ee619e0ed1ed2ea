"""Data that crosses the Ingress ↔ model-deployment boundary, and the backend protocols.

Every model deployment is stateless: it takes one input and streams back output. The
Session in the Ingress only ever sees these types and protocols, so unit tests can hand it
fake backends directly and the Serve app hands it thin wrappers over deployment handles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    """One message of a chat conversation, in the OpenAI chat shape."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(BaseModel):
    """Generation settings for one LLM call."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=160, ge=1, le=8192)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    seed: int | None = None


class Transcript(BaseModel):
    """What ASR heard in one utterance."""

    text: str
    language: str | None = None
    audio_duration_s: float = 0.0
    processing_s: float = 0.0


class AudioChunk(BaseModel):
    """A piece of mono PCM16 little-endian audio at ``sample_rate``."""

    pcm16: bytes
    sample_rate: int = Field(gt=0)

    @property
    def duration_s(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.pcm16) / 2 / self.sample_rate


@runtime_checkable
class ASRBackend(Protocol):
    """Speech to text for one finished utterance."""

    async def transcribe(self, pcm16: bytes, sample_rate: int, language: str | None) -> Transcript:
        """Transcribe mono PCM16 audio."""
        ...


@runtime_checkable
class LLMBackend(Protocol):
    """Chat completion that streams text deltas; closing the iterator aborts generation."""

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the assistant's reply as text deltas."""
        ...


@runtime_checkable
class TTSBackend(Protocol):
    """Text to speech for one phrase; closing the iterator stops synthesis."""

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream audio for ``text`` in ``voice`` (``None``: the backend's default)."""
        ...
