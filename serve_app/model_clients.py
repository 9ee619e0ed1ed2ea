"""The Session's view of the three model deployments.

``ModelClients`` bundles one ASR, one LLM and one TTS object that implement the backend
protocols of ``deployments.types``. In the Serve app they wrap deployment handles; in unit
tests they are the fake backends themselves — the Session cannot tell the difference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from deployments.types import (
    ASRBackend,
    AudioChunk,
    ChatMessage,
    LLMBackend,
    SamplingParams,
    Transcript,
    TTSBackend,
)


@dataclass(frozen=True)
class ModelClients:
    """The three model endpoints one Session talks to."""

    asr: ASRBackend
    llm: LLMBackend
    tts: TTSBackend


async def _stream(response: Any) -> AsyncIterator[Any]:
    """Yield from a ``DeploymentResponseGenerator``; cancel it in the replica if we stop early.

    Cancelling the consumer (barge-in) or closing this generator must reach the replica so
    the engine aborts: ``DeploymentResponseGenerator.cancel()`` propagates it.
    """
    finished = False
    try:
        async for item in response:
            yield item
        finished = True
    finally:
        if not finished:
            response.cancel()


class HandleASR:
    """``ASRBackend`` over the ASR deployment's handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def transcribe(self, pcm16: bytes, sample_rate: int, language: str | None) -> Transcript:
        """Transcribe on any ASR replica."""
        return await self._handle.transcribe.remote(pcm16, sample_rate, language)


class HandleLLM:
    """``LLMBackend`` over the LLM deployment's streaming handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle.options(stream=True)

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream text deltas from any LLM replica."""
        async for delta in _stream(self._handle.chat.remote(messages, params)):
            yield delta


class HandleTTS:
    """``TTSBackend`` over the TTS deployment's streaming handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle.options(stream=True)

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream audio chunks from any TTS replica."""
        async for chunk in _stream(self._handle.synthesize.remote(text, voice)):
            yield chunk
