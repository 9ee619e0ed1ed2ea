"""Chat with a vLLM engine served by Ray Serve's LLM stack (``ray.serve.llm.LLMServer``).

The engine is a deployment of the same app (``llm_engines`` in the app config, see
``deployments.llm_engines``) or of another app (``app_name``). Requests go through a Serve
deployment handle, not HTTP: no extra hop through the proxy, and cancelling the stream
cancels the engine's request task, on which vLLM aborts the request and frees its KV cache.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.llm_engines import engine_deployment_name
from deployments.types import ChatMessage, SamplingParams


class ServeLLMOptions(BaseModel):
    """Options of :class:`ServeLLM`.

    Attributes:
        deployment: The engine's deployment name; default: the one ``build_app`` gives the
            ``llm_engines`` entry whose ``model_id`` is this backend's ``model``.
        app_name: The Serve application holding the engine; default: this replica's own.
        extra_body: Extra fields of the chat request that vLLM understands (``top_k``,
            ``repetition_penalty``, ``ignore_eos``, ...).
    """

    model_config = ConfigDict(extra="forbid")

    deployment: str | None = None
    app_name: str | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)


class EngineStreamError(RuntimeError):
    """The engine answered the stream with an error event."""


def parse_sse_deltas(events: Iterable[Any]) -> list[str]:
    """Text deltas from one batch of ``LLMServer.chat`` stream output.

    ``LLMServer`` yields lists of server-sent-event strings (``data: {chunk}\\n\\n``, ending
    with ``data: [DONE]``); an error arrives as ``data: {"error": {...}}``.

    Raises:
        EngineStreamError: an event carries an error.
    """
    deltas: list[str] = []
    for event in events:
        text = event if isinstance(event, str) else json.dumps(_as_dict(event))
        for line in text.splitlines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if not payload or payload == "[DONE]":
                continue
            chunk = json.loads(payload)
            if "error" in chunk:
                error = chunk["error"] or {}
                raise EngineStreamError(f"{error.get('type', 'error')}: {error.get('message', chunk)}")
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    deltas.append(content)
    return deltas


def _as_dict(event: Any) -> Any:
    """A pydantic response object (non-SSE output) as plain data."""
    dump = getattr(event, "model_dump", None)
    return dump() if callable(dump) else event


class ServeLLM(Backend):
    """Streaming chat through a ``ray.serve.llm`` engine deployment's handle.

    Args:
        model: The engine's ``model_id`` (``model_loading_config.model_id`` of its entry).
        options: See :class:`ServeLLMOptions`.
    """

    Options = ServeLLMOptions

    def __init__(self, model: str | None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        if not model:
            raise ValueError("the serve_llm backend needs `model`: the model_id of an llm_engines entry")
        self.model_id = model
        opts: ServeLLMOptions = self.options
        self.deployment_name = opts.deployment or engine_deployment_name(model)
        self._handle: Any = None
        self._active = 0
        self._deltas = 0
        self._aborted = 0

    def _engine(self) -> Any:
        """The engine's handle, fetched on first use (a handle needs a running Serve)."""
        if self._handle is None:
            from ray import serve

            opts: ServeLLMOptions = self.options
            app_name = opts.app_name or serve.get_replica_context().app_name
            self._handle = serve.get_deployment_handle(self.deployment_name, app_name)
        return self._handle

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the reply's text deltas; closing the iterator cancels the engine request."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        opts: ServeLLMOptions = self.options
        optional: dict[str, Any] = {"seed": params.seed} if params.seed is not None else {}
        request = ChatCompletionRequest(
            model=self.model_id,
            messages=[m.model_dump() for m in messages],
            stream=True,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            **optional,
            **opts.extra_body,
        )
        response = self._engine().options(stream=True).chat.remote(request)
        self._active += 1
        finished = False
        try:
            async for batch in response:
                for delta in parse_sse_deltas(batch if isinstance(batch, list) else [batch]):
                    self._deltas += 1
                    yield delta
            finished = True
        finally:
            self._active -= 1
            if not finished:
                # Cancelling the handle's response cancels the engine's request task, on
                # which vLLM aborts the request (the Serve test checks the engine is empty).
                self._aborted += 1
                response.cancel()

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_generations``, ``tokens_generated`` (deltas received) and
        ``aborted_generations`` (closed by the consumer before the end)."""
        return {
            "active_generations": self._active,
            "tokens_generated": self._deltas,
            "aborted_generations": self._aborted,
        }
