"""OpenAI's Chat Completions API on voxray's LLM: ``POST /v1/chat/completions``, ``GET /v1/models``.

Requests go through the same ``HandleLLM`` as a voice turn, so the LLM deployment's backend
(a router with its groups and fallback included) and the replica-death retries apply. The
router picks its group when it is built, not per request, so the request's ``model`` is
accepted whatever it says and responses name the one served model (:func:`served_model`).

What the LLM deployment cannot do is done here: stop sequences are cut from the stream
(and end the generation), ``finish_reason`` is ``length`` when the reply used all of
``max_tokens`` deltas, and ``usage`` is estimated, since the deployment streams text deltas
without token counts. Tools and log probabilities are refused with a 400 rather than
silently ignored. Access is the WebSockets': an API key as ``Authorization: Bearer``, or
loopback clients when no key is configured.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from deployments.types import LLMBackend
from serve_app.config import AppConfig
from serve_app.engine.model_clients import ModelReplicaError, client_error_text
from serve_app.observability import metrics
from serve_app.server.access import bearer_token
from serve_app.server.admission import Admission
from serve_app.server.chat_completion_request import ChatCompletionRequest, OpenAIError, parse_request
from serve_app.server.drain import server_restarting
from serve_app.server.limits import CloseConnection

logger = logging.getLogger("voxray")

PROTOCOL = "chat_completions"  # the metrics' protocol label
CHARS_PER_TOKEN = 4  # for the prompt_tokens estimate: a common average for English text
STARTED = int(time.time())  # the model list's `created`: when this Ingress process started


# --- generation -----------------------------------------------------------------------------


class StopScanner:
    """Cuts streamed text at the first stop sequence.

    Text that could be the start of a stop sequence is held back until the next delta
    decides it, so a sequence split across deltas is still found and never shown.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """The text that may be shown now; sets ``stopped`` once a stop sequence is seen."""
        text = self._held + delta
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self.stopped, self._held = True, ""
            return text[: min(found)]
        keep = max((k for s in self._stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back, at the end of the stream (it turned out not to be a stop)."""
        held, self._held = self._held, ""
        return held


class Generation:
    """One completion: the visible text pieces, then why it finished and how long it was.

    Args:
        llm: The LLM (``HandleLLM`` in the Ingress; a fake backend in unit tests).
        config: The app config (default sampling, metric labels).
        request: The validated request.
    """

    def __init__(self, llm: LLMBackend, config: AppConfig, request: ChatCompletionRequest) -> None:
        self._llm = llm
        self._labels = metrics.StageLabels.of("LLM", config.llm).tags()
        self.messages = [m.to_chat() for m in request.messages]
        self.params = request.sampling(config)
        self._stops = request.stops()
        self.deltas = 0
        self.finish_reason: Literal["stop", "length"] = "stop"

    async def pieces(self) -> AsyncGenerator[str, None]:
        """Stream the reply's text; leaving early (or a cancelled consumer) stops the LLM."""
        scanner = StopScanner(self._stops)
        called = time.perf_counter()
        stream = self._llm.chat(self.messages, self.params)
        # Closed on every way out: a stop sequence, a client gone, an error. Closing the
        # HandleLLM stream cancels the generation in the LLM replica.
        async with contextlib.aclosing(stream):  # type: ignore[type-var]  (an async generator)
            async for delta in stream:
                if not self.deltas:
                    metrics.record(
                        "voxray_llm_time_to_first_token_seconds", time.perf_counter() - called, **self._labels
                    )
                self.deltas += 1
                piece = scanner.push(delta)
                if piece:
                    yield piece
                if scanner.stopped:
                    return
        rest = scanner.flush()
        if rest:
            yield rest
        if self.deltas >= self.params.max_tokens:  # a delta is one token for llama.cpp and vLLM
            self.finish_reason = "length"

    def usage(self) -> dict[str, int]:
        """Estimated token counts: the deployment reports none.

        ``completion_tokens`` counts the streamed deltas; ``prompt_tokens`` is the prompt's
        characters over :data:`CHARS_PER_TOKEN`.
        """
        chars = sum(len(m.content) for m in self.messages)
        prompt = -(-chars // CHARS_PER_TOKEN)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.deltas,
            "total_tokens": prompt + self.deltas,
        }


# --- rendering ------------------------------------------------------------------------------


def completion_body(
    cid: str, created: int, model: str, text: str, finish_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice."""
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def chunk_body(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: one delta, or (``delta`` None) the final usage chunk.

    With ``stream_options.include_usage`` every chunk carries ``usage`` (``null`` but in the
    last one, which has no choices), as OpenAI sends them.
    """
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if with_usage:
        body["usage"] = usage
    return body


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


def model_failure(exc: BaseException) -> OpenAIError:
    """How an LLM failure is reported: 503 when no replica answered, else 500."""
    status = 503 if isinstance(exc, ModelReplicaError) else 500
    return OpenAIError(
        status, f"The model failed: {client_error_text(exc)}", type="server_error", code="model_error"
    )


# --- the endpoints --------------------------------------------------------------------------


def served_model(config: AppConfig) -> str:
    """The model id responses report and ``/v1/models`` lists: the LLM's model, else its backend."""
    return config.llm.model or config.llm.backend


def admit(request: Request, admission: Admission, draining: bool) -> None:
    """Refuse requests a WebSocket would be refused: on a draining replica, from a disallowed
    browser origin, without a valid API key (or, with no keys, from another machine).

    Raises:
        OpenAIError: 503 (draining), 403 (origin, loopback only) or 401 (key).
    """
    try:
        if draining:
            raise server_restarting()
        admission.check_origin(request)
        admission.check_api_key(request, bearer_token(request.headers))
    except CloseConnection as refused:
        metrics.count("voxray_connections_rejected", reason=refused.error_code, protocol=PROTOCOL)
        status = {"server_shutting_down": 503, "origin_not_allowed": 403, "loopback_only": 403}
        raise OpenAIError(
            status.get(refused.error_code, 401),
            refused.message,
            type=refused.error_type,
            code=refused.error_code,
        ) from None


def models_response(
    request: Request, config: AppConfig, admission: Admission, draining: bool
) -> JSONResponse:
    """``GET /v1/models``: the one model this server serves."""
    try:
        admit(request, admission, draining)
    except OpenAIError as refused:
        return refused.response()
    model = {"id": served_model(config), "object": "model", "created": STARTED, "owned_by": "voxray"}
    return JSONResponse({"object": "list", "data": [model]})


async def chat_completion_response(
    request: Request, config: AppConfig, llm: LLMBackend, admission: Admission, draining: bool
) -> Response:
    """``POST /v1/chat/completions``: a ``chat.completion``, or its chunks as server-sent events.

    A failure before the first text is an HTTP error (500, or 503 when no LLM replica
    answered); once a stream has started, it is an ``error`` event that ends the stream
    (without ``[DONE]``). A client that goes away cancels the generation.
    """
    try:
        admit(request, admission, draining)
        body = await request.body()
        if len(body) > config.limits.max_message_bytes:
            raise OpenAIError(413, f"Request body exceeds {config.limits.max_message_bytes} bytes.")
        parsed = parse_request(body)
    except OpenAIError as refused:
        return refused.response()
    generation = Generation(llm, config, parsed)
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), served_model(config)
    pieces = generation.pieces()
    first: str | None = None
    try:
        if parsed.stream:
            # The first piece before the headers: a failure that early still gets an HTTP status.
            first = await anext(pieces, None)
        else:
            text = "".join([piece async for piece in pieces])
    except Exception as exc:
        metrics.count("voxray_turns", outcome="failed", protocol=PROTOCOL)
        logger.warning("chat completion %s failed: %s", cid, client_error_text(exc))
        return model_failure(exc).response()
    except BaseException:  # cancelled: the client went away
        metrics.count("voxray_turns", outcome="cancelled", protocol=PROTOCOL)
        raise
    if not parsed.stream:
        metrics.count("voxray_turns", outcome="completed", protocol=PROTOCOL)
        usage = generation.usage()
        return JSONResponse(completion_body(cid, created, model, text, generation.finish_reason, usage))
    include_usage = parsed.stream_options is not None and parsed.stream_options.include_usage
    # Should the client leave before Starlette starts this body, `pieces` is never closed by
    # it; dropping the unstarted body drops `pieces` too, and the event loop's async-generator
    # finalizer then closes it (and with it the LLM stream).
    events = stream_events(generation, pieces, first, (cid, created, model), include_usage)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may buffer the stream
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


async def stream_events(
    generation: Generation,
    pieces: AsyncGenerator[str, None],
    first: str | None,
    ident: tuple[str, int, str],
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """The SSE body: a role chunk, content chunks, the finish chunk, usage if asked, ``[DONE]``.

    Args:
        generation: The completion; ``pieces`` is its ``pieces()`` after ``first``.
        pieces: The rest of the text.
        first: The first piece, already taken (``None``: the reply is empty).
        ident: The completion's id, ``created`` and model.
        include_usage: ``stream_options.include_usage``.
    """

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> str:
        usage = generation.usage() if delta is None else None
        return sse(chunk_body(*ident, delta, finish, usage, include_usage))

    outcome = "cancelled"
    try:
        yield chunk({"role": "assistant", "content": ""})
        if first is not None:
            yield chunk({"content": first})
            async for piece in pieces:
                yield chunk({"content": piece})
        outcome = "completed"
    except Exception as exc:
        outcome = "failed"
        logger.warning("chat completion %s failed mid-stream: %s", ident[0], client_error_text(exc))
        yield sse({"error": model_failure(exc).body()})
        return
    finally:
        # Starlette cancels or closes this generator when the client disconnects; closing
        # `pieces` there is what stops the LLM replica's generation.
        await pieces.aclose()
        metrics.count("voxray_turns", outcome=outcome, protocol=PROTOCOL)
    yield chunk({}, generation.finish_reason)
    if include_usage:
        yield chunk(None)
    yield sse("[DONE]")
