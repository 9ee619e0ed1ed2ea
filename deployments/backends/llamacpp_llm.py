"""llama.cpp chat backend (llama-cpp-python), the embedded CPU LLM.

Generation runs in a one-worker thread executor and pushes text deltas to an asyncio queue
(:func:`stream_from_worker`). When the consumer closes the stream or its task is cancelled
(barge-in), a ``threading.Event`` is set; the worker checks it after every token and closes
the llama.cpp iterator, so an abandoned reply stops costing CPU within one token. Prompt
processing (prefill) cannot be interrupted, but for voice-length prompts it is short.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend, stream_from_worker
from deployments.models import is_local_spec, model_file, resolve_model
from deployments.types import ChatMessage, SamplingParams

T = TypeVar("T")

DEFAULT_MODEL = "bundled:qwen2.5-coder-0.5b-instruct-q4_k_m"


class LlamaCppOptions(BaseModel):
    """Options of :class:`LlamaCppLLM`.

    Attributes:
        n_ctx: Context window in tokens (prompt + reply).
        n_threads: CPU threads for generating tokens.
        n_threads_batch: CPU threads for prompt processing (``None``: ``n_threads``). Prompt
            processing is the time to first token, so it may use more threads than generation,
            which then leaves a core to TTS while the reply streams.
        n_batch: Prompt tokens evaluated per batch.
        chat_format: llama-cpp-python chat format; ``None`` uses the GGUF's own chat template.
        hf_filename: File (glob) to take from a Hugging Face repo when ``model`` is a repo id.
    """

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(default=2048, ge=128)
    n_threads: int = Field(default=2, ge=1)
    n_threads_batch: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=512, ge=1)
    chat_format: str | None = None
    hf_filename: str = "*q4_k_m.gguf"


class LlamaCppLLM(Backend):
    """Streaming chat on a GGUF model with llama.cpp; one generation at a time per instance.

    Args:
        model: ``bundled:<name>`` (default ``bundled:qwen2.5-coder-0.5b-instruct-q4_k_m``), a ``.gguf``
            file or a directory holding one, or a Hugging Face repo id (the file is picked
            with ``options.hf_filename``).
        options: See :class:`LlamaCppOptions`.
    """

    Options = LlamaCppOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from llama_cpp import Llama

        opts: LlamaCppOptions = self.options
        kwargs: dict[str, Any] = {
            "n_ctx": opts.n_ctx,
            "n_threads": opts.n_threads,
            "n_threads_batch": opts.n_threads_batch or opts.n_threads,
            "n_batch": opts.n_batch,
            "chat_format": opts.chat_format,
            "verbose": False,
        }
        spec = self.model_spec
        if is_local_spec(spec):
            self.model_path = model_file(resolve_model(spec), "*.gguf")
            self._llama = Llama(model_path=str(self.model_path), **kwargs)
        else:
            self._llama = Llama.from_pretrained(repo_id=spec, filename=opts.hf_filename, **kwargs)
            self.model_path = Path(self._llama.model_path)
        # llama.cpp contexts are not thread-safe: one worker thread, and a lock for anything
        # that might reach the context from elsewhere.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self._lock = threading.Lock()
        self._active = 0
        self._tokens = 0
        self._aborted = 0

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream the assistant reply to ``messages`` as text deltas.

        Closing the iterator (or cancelling the task that consumes it) stops generation
        within one token.
        """
        payload = [m.model_dump() for m in messages]

        def produce(emit: Callable[[str], None], stop: threading.Event) -> None:
            self._generate(payload, params, emit, stop)

        # Returned, not re-yielded: closing the caller's iterator then closes the worker
        # stream directly instead of waiting for garbage collection of a nested generator.
        return stream_from_worker(self._executor, produce)

    def _generate(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        emit: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        with self._lock:
            if stop.is_set():  # abandoned while waiting for the previous generation
                self._aborted += 1
                return
            self._active += 1
            aborted = False
            stream: Iterator[Any] | None = None
            try:
                stream = self._llama.create_chat_completion(
                    messages=messages,
                    stream=True,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    seed=params.seed,
                )
                for chunk in stream:
                    # The iterator is suspended between tokens, so checking here bounds the
                    # work done after an abort to the one token already in flight.
                    if stop.is_set():
                        aborted = True
                        break
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        self._tokens += 1
                        emit(delta)
            finally:
                if stream is not None:
                    stream.close()  # type: ignore[attr-defined]
                self._active -= 1
                self._aborted += aborted

    async def warmup(self) -> None:
        """Generate one token, so the first real request finds the weights paged in."""
        params = SamplingParams(max_tokens=1, temperature=0.0)
        async for _ in self.chat([ChatMessage(role="user", content="Hi")], params):
            pass

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_generations``, ``tokens_generated`` (stream deltas) and
        ``aborted_generations`` (stopped by the consumer before the end)."""
        return {
            "active_generations": self._active,
            "tokens_generated": self._tokens,
            "aborted_generations": self._aborted,
        }
