"""Chat through any OpenAI-compatible endpoint (a vLLM server, llama.cpp's server, OpenAI).

The reply streams over server-sent events. Closing the iterator (barge-in) closes the HTTP
response, which is how such servers learn to abort: vLLM cancels the request when its client
disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.types import ChatMessage, SamplingParams


class OpenAILLMOptions(BaseModel):
    """Options of :class:`OpenAILLM`.

    Attributes:
        base_url: The API root, e.g. ``http://vllm:8000/v1``.
        api_key_env: Environment variable holding the API key; when it is unset the key
            ``"EMPTY"`` is sent, which servers without authentication accept.
        timeout_s: Connect/read timeout of one request.
        max_retries: Retries of a failed connection before the first token.
        extra_body: Extra JSON fields for the request (server-specific, e.g. vLLM's ``top_k``).
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=1, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)


class OpenAILLM(Backend):
    """Streaming chat through an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: The served model name, sent as is (e.g. ``Qwen/Qwen2.5-7B-Instruct``).
        options: See :class:`OpenAILLMOptions`; ``base_url`` is required.
    """

    Options = OpenAILLMOptions

    def __init__(self, model: str | None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        if not model:
            raise ValueError("the openai LLM backend needs `model`: the name the server serves")
        from openai import AsyncOpenAI

        opts: OpenAILLMOptions = self.options
        self.model_name = model
        self._client = AsyncOpenAI(
            base_url=opts.base_url,
            api_key=os.environ.get(opts.api_key_env) or "EMPTY",
            timeout=opts.timeout_s,
            max_retries=opts.max_retries,
        )
        self._active = 0
        self._deltas = 0
        self._aborted = 0

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the assistant reply as text deltas; closing the iterator closes the request."""
        opts: OpenAILLMOptions = self.options
        optional: dict[str, Any] = {"seed": params.seed} if params.seed is not None else {}
        stream = await self._client.chat.completions.create(
            model=self.model_name,
            messages=[m.model_dump() for m in messages],  # type: ignore[misc]
            stream=True,
            # max_tokens, not max_completion_tokens: the one every compatible server knows.
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            extra_body=opts.extra_body or None,
            **optional,
        )
        self._active += 1
        finished = False
        try:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        self._deltas += 1
                        yield choice.delta.content
            finished = True
        finally:
            self._active -= 1
            self._aborted += not finished
            # Shielded so a cancelled consumer still closes the connection, which is what
            # tells the server to stop generating.
            with contextlib.suppress(Exception):
                await asyncio.shield(stream.close())

    async def warmup(self) -> None:
        """Nothing: the server is warm or not; a request here would only hide start-up errors."""

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_generations``, ``tokens_generated`` (stream deltas received) and
        ``aborted_generations`` (closed by the consumer before the end)."""
        return {
            "active_generations": self._active,
            "tokens_generated": self._deltas,
            "aborted_generations": self._aborted,
        }
