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


class Word(BaseModel):
    """One recognised word with its times in the transcribed audio.

    Attributes:
        text: The word as written, punctuation attached (``"Paris."``).
        start_s: Where it starts, in seconds from the start of the audio given to ASR.
        end_s: Where it ends.
        confidence: The model's probability for it, 0 to 1.
    """

    text: str
    start_s: float = Field(ge=0.0)
    end_s: float = Field(ge=0.0)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)


class Transcript(BaseModel):
    """What ASR heard in one utterance.

    Attributes:
        words: Word timings, when asked for (``word_timestamps``) and the backend has them;
            empty otherwise.
    """

    text: str
    language: str | None = None
    audio_duration_s: float = 0.0
    processing_s: float = 0.0
    words: list[Word] = Field(default_factory=list)


class DecodeOptions(BaseModel):
    """How to decode one request, for live transcription.

    Attributes:
        word_timestamps: Also return each word's times (``Transcript.words``), where the
            backend can (faster-whisper aligns them; others leave ``words`` empty and the
            engine spreads the words over the audio).
        draft: A provisional decode for a partial transcript: latency over accuracy. A
            backend may skip expensive second attempts and return an empty transcript
            when its quick result looks wrong.
    """

    model_config = ConfigDict(extra="forbid")

    word_timestamps: bool = False
    draft: bool = False


class SpeakerEmbeddings(BaseModel):
    """Speaker embeddings of overlapping windows over one stretch of audio.

    Window ``i`` covers ``starts_s[i]`` to ``ends_s[i]`` (seconds from the start of the
    audio) and has the unit-length embedding ``vectors[i]``; the three lists have one entry
    per window and are empty when the audio is too short for any window.
    """

    starts_s: list[float] = Field(default_factory=list)
    ends_s: list[float] = Field(default_factory=list)
    vectors: list[list[float]] = Field(default_factory=list)


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

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Transcribe mono PCM16 audio (``options``: word times, draft decoding)."""
        ...


@runtime_checkable
class SpeakerBackend(Protocol):
    """Speaker embeddings for diarization: who is speaking in each window of the audio."""

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed overlapping windows of mono PCM16 audio (see :class:`SpeakerEmbeddings`)."""
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
