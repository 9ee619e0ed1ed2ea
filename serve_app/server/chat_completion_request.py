"""The request side of ``POST /v1/chat/completions``: its pydantic models and OpenAI's error body.

The body is validated here rather than by FastAPI, so that a bad request gets OpenAI's 400
(``{"error": {"message", "type", "param", "code"}}`` naming the field) instead of FastAPI's
422. Messages carry text only; ``tools``, ``functions``, ``logprobs`` and ``n`` above 1 are
refused, since the LLM deployment streams one text reply and nothing else.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.responses import JSONResponse

from deployments.types import ChatMessage, SamplingParams
from serve_app.config import AppConfig

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_TOKENS_LIMIT = 8192  # SamplingParams' limit


class OpenAIError(Exception):
    """A request refused with an OpenAI error body.

    Attributes:
        status: HTTP status.
        message: What went wrong, for the client.
        type: ``invalid_request_error`` (the client's doing) or ``server_error``.
        param: The request field at fault, if any (``messages[0].role``).
        code: A stable code, if any.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        """The ``error`` object: ``{"message", "type", "param", "code"}``."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        """The error as OpenAI sends it: ``{"error": {...}}`` with its status."""
        return JSONResponse({"error": self.body()}, status_code=self.status)


class ToolCallFunction(BaseModel):
    """The function an assistant message called."""

    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """One tool call of an earlier assistant message (history only: this server makes none)."""

    id: str = ""
    type: Literal["function"] = "function"
    function: ToolCallFunction


class Message(BaseModel):
    """One message of the conversation, in OpenAI's chat shape (text content only)."""

    model_config = ConfigDict(extra="ignore")  # `name`, `refusal`, `audio`... carry nothing we use

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        # Before pydantic's own check, whose error for a bad list would be the `str` member's.
        if content is None or isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError("content must be a string or a list of text parts")
        for part in content:
            if not isinstance(part, dict):
                raise ValueError('content parts must be objects: {"type": "text", "text": "..."}')
            if part.get("type") != "text":
                raise ValueError(f"only text content parts are supported, not {str(part.get('type'))[:40]!r}")
            if not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs a string `text`")
        return content

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        """The content as one string (text parts joined by newlines)."""
        if isinstance(self.content, list):
            return "\n".join(part["text"] for part in self.content)
        return self.content or ""

    def to_chat(self) -> ChatMessage:
        """The LLM deployment's message for this one.

        The deployment knows system, user and assistant only: ``developer`` is OpenAI's new
        name for ``system``; a tool's result is passed on as a user message that says so, and
        an assistant's tool calls as text, so the model still sees what happened.
        """
        text = self.text()
        if self.role == "developer":
            return ChatMessage(role="system", content=text)
        if self.role == "tool":
            return ChatMessage(role="user", content=f"Result of tool call {self.tool_call_id or ''}: {text}")
        if self.role == "assistant" and self.tool_calls:
            calls = "; ".join(f"{c.function.name}({c.function.arguments})" for c in self.tool_calls)
            text = f"{text}\n[called {calls}]".strip()
        return ChatMessage(role=self.role, content=text)  # type: ignore[arg-type]  (narrowed above)


class StreamOptions(BaseModel):
    """``stream_options``: whether a streamed reply ends with a usage chunk."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The request body. Unknown fields (``user``, penalties, ``metadata``...) are ignored, as
    are fields this server cannot honour but that change nothing a client relies on."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int | None = 1
    seed: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    logprobs: bool | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return stop

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported: this server returns one choice per request")
        return n

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tool calling is not supported: this server's LLM replies with text only")
        return tools

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("log probabilities are not supported by this server")
        return logprobs

    def stops(self) -> list[str]:
        """The non-empty stop sequences."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]

    def sampling(self, config: AppConfig) -> SamplingParams:
        """The LLM call's settings: the request's, else the configured LLM's defaults."""
        params = SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or config.llm.max_tokens,
            temperature=config.llm.temperature if self.temperature is None else self.temperature,
            seed=self.seed,
        )
        return params if self.top_p is None else params.model_copy(update={"top_p": self.top_p})


def _param(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as OpenAI names fields: ``messages[0].content``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_request(body: bytes) -> ChatCompletionRequest:
    """Validate a request body.

    Raises:
        OpenAIError: 400 naming the first field at fault.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise OpenAIError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Union members add their type to the location (`content.str`): not a field's name.
        loc = tuple(
            p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "list")))
        )
        param = _param(loc) or None
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise OpenAIError(400, f"Invalid value for '{param}': {reason}", param=param) from None
