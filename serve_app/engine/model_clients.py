"""The Session's view of the three model deployments.

``ModelClients`` bundles one ASR, one LLM and one TTS object that implement the backend
protocols of ``deployments.types``. In the Serve app they wrap deployment handles; in unit
tests they are the fake backends themselves — the Session cannot tell the difference.

The handle wrappers survive a replica dying under a call (crash, OOM kill, node loss,
``ray.kill``). Observed with Ray 2.60: the pending ``DeploymentResponse`` or the streaming
``DeploymentResponseGenerator`` raises ``ray.exceptions.ActorDiedError`` (actor-call
transport, the default) or ``ActorUnavailableError`` (gRPC transport,
``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``), both ``RayActorError``s, in the unary and streaming
case alike and before or after the first streamed item. Serve's router then stops routing
to that replica, so a new call lands on another one (or waits for the controller's
replacement). A call is retried only when that is invisible to the client: a transcription
always (it is idempotent), a stream only while it has yielded nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ray.exceptions import RayActorError, RayTaskError

from deployments.common import error_summary
from deployments.types import (
    ASRBackend,
    AudioChunk,
    ChatMessage,
    DecodeOptions,
    LLMBackend,
    SamplingParams,
    SpeakerBackend,
    SpeakerEmbeddings,
    Transcript,
    TTSBackend,
)

logger = logging.getLogger("voxray")

T = TypeVar("T")

ATTEMPTS = 3
"""Calls per request, first one included: a second replica death in a row is rare, a third
means the deployment is down and the client should hear so instead of waiting on."""
BACKOFF_S = 0.1
"""Pause before retry ``n`` is ``n * BACKOFF_S``: gives the router a moment to drop the dead
replica without adding noticeable latency to the turn."""


@dataclass(frozen=True)
class ModelClients:
    """The model endpoints one Session talks to (``speaker``: diarization, when configured)."""

    asr: ASRBackend
    llm: LLMBackend
    tts: TTSBackend
    speaker: SpeakerBackend | None = None


class ModelReplicaError(RuntimeError):
    """A model replica died (or became unreachable) and the call could not be retried.

    Raised ``from`` Ray's own error, which names the actor, its pid and node address: this
    message goes to the client in the ``error`` event, that one stays in the server log.
    """


def is_replica_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the replica serving a call died or cannot be reached.

    ``RayTaskError`` is excluded: it carries an exception raised by the deployment's own
    code (a model failure, or an actor the model called having died). Ray makes it an
    instance of the cause's class too, so a plain ``isinstance(exc, RayActorError)`` would
    retry a model's error whenever that error happened to be an actor death.
    """
    return isinstance(exc, RayActorError) and not isinstance(exc, RayTaskError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def client_error_text(exc: BaseException) -> str:
    """What a client may read about a model failure: the error's class and first line."""
    return error_summary(exc)


def _log_retry(deployment: str, method: str, attempt: int, attempts: int, exc: BaseException) -> None:
    logger.warning(
        "%s replica lost during %s (%s: %s); retrying on another replica (attempt %d of %d)",
        deployment,
        method,
        type(exc).__name__,
        _first_line(exc),
        attempt + 1,
        attempts,
    )


def _gave_up(deployment: str, method: str, detail: str, exc: BaseException) -> ModelReplicaError:
    logger.warning(
        "%s replica lost during %s (%s: %s); %s",
        deployment,
        method,
        type(exc).__name__,
        _first_line(exc),
        detail,
    )
    return ModelReplicaError(f"{deployment} replica failed during {method}: {detail}")


async def call_with_retry(
    deployment: str,
    method: str,
    call: Callable[[], Awaitable[T]],
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
) -> T:
    """Await ``call()``; if its replica died, call again (on another replica), at most ``attempts`` times.

    Only for idempotent calls. Any other exception, and cancellation, pass through untouched.

    Raises:
        ModelReplicaError: The replica died on every attempt.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if not is_replica_gone(exc):
                raise
            if attempt == attempts:
                raise _gave_up(
                    deployment, method, f"no replica answered in {attempts} attempts", exc
                ) from exc
            _log_retry(deployment, method, attempt, attempts, exc)
            await asyncio.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


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


async def stream_with_retry(
    deployment: str,
    method: str,
    start: Callable[[], Any],
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
) -> AsyncIterator[Any]:
    """Yield from the stream ``start()`` opens; restart it elsewhere if its replica dies first.

    A restart is only invisible while nothing was yielded: after that the consumer already
    acted on part of the output (sent audio to the client), so a dead replica then ends the
    stream with ``ModelReplicaError`` and the response fails cleanly instead of repeating.

    Raises:
        ModelReplicaError: The replica died after output started, or on every attempt.
    """
    for attempt in range(1, attempts + 1):
        yielded = 0
        try:
            # aclosing: when the consumer stops early, the replica's generator is cancelled
            # right away rather than whenever the abandoned inner generator is collected.
            async with contextlib.aclosing(_stream(start())) as stream:
                async for item in stream:
                    yielded += 1
                    yield item
            return
        except Exception as exc:
            if not is_replica_gone(exc):
                raise
            if yielded:
                detail = f"it died after streaming {yielded} items"
                raise _gave_up(deployment, method, detail, exc) from exc
            if attempt == attempts:
                raise _gave_up(
                    deployment, method, f"no replica answered in {attempts} attempts", exc
                ) from exc
            _log_retry(deployment, method, attempt, attempts, exc)
            await asyncio.sleep(backoff_s * attempt)


def _deployment_name(handle: Any, default: str) -> str:
    name = getattr(handle, "deployment_name", None)
    return name if isinstance(name, str) else default


class _RetryingHandle:
    """What the three handle wrappers share: the handle, its deployment's name, retry policy.

    Args:
        handle: The deployment's ``DeploymentHandle``.
        default_name: Name for log lines when the handle does not tell its own.
        stream: Call the deployment's streaming methods (``options(stream=True)``).
        attempts: Calls per request when replicas die under it (before any output, for streams).
        backoff_s: Base pause between attempts.
    """

    def __init__(
        self,
        handle: Any,
        default_name: str,
        stream: bool = False,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self._name = _deployment_name(handle, default_name)
        self._handle = handle.options(stream=True) if stream else handle
        self._attempts = attempts
        self._backoff_s = backoff_s


class HandleASR(_RetryingHandle):
    """``ASRBackend`` over the ASR deployment's handle."""

    def __init__(self, handle: Any, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> None:
        super().__init__(handle, "ASR", False, attempts, backoff_s)

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Transcribe on any ASR replica; retried on another if the replica dies meanwhile."""

        async def call() -> Transcript:
            return await self._handle.transcribe.remote(pcm16, sample_rate, language, options)

        return await call_with_retry(self._name, "transcribe", call, self._attempts, self._backoff_s)


class HandleSpeaker(_RetryingHandle):
    """``SpeakerBackend`` over the Speaker deployment's handle."""

    def __init__(self, handle: Any, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> None:
        super().__init__(handle, "Speaker", False, attempts, backoff_s)

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed on any Speaker replica; retried on another if the replica dies meanwhile."""

        async def call() -> SpeakerEmbeddings:
            return await self._handle.embed.remote(pcm16, sample_rate)

        return await call_with_retry(self._name, "embed", call, self._attempts, self._backoff_s)


class HandleLLM(_RetryingHandle):
    """``LLMBackend`` over the LLM deployment's streaming handle."""

    def __init__(self, handle: Any, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> None:
        super().__init__(handle, "LLM", True, attempts, backoff_s)

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> AsyncIterator[str]:
        """Stream text deltas from any LLM replica (restarted elsewhere if it dies before the first)."""
        return stream_with_retry(
            self._name,
            "chat",
            lambda: self._handle.chat.remote(messages, params),
            self._attempts,
            self._backoff_s,
        )


class HandleTTS(_RetryingHandle):
    """``TTSBackend`` over the TTS deployment's streaming handle."""

    def __init__(self, handle: Any, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> None:
        super().__init__(handle, "TTS", True, attempts, backoff_s)

    def synthesize(self, text: str, voice: str | None) -> AsyncIterator[AudioChunk]:
        """Stream audio chunks from any TTS replica (restarted elsewhere if it dies before the first)."""
        return stream_with_retry(
            self._name,
            "synthesize",
            lambda: self._handle.synthesize.remote(text, voice),
            self._attempts,
            self._backoff_s,
        )
