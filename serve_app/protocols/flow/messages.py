"""The Speechmatics Flow wire protocol: client messages (pydantic) and server message builders.

Pure protocol, no engine and no Ray. Shapes follow Speechmatics' AsyncAPI spec
(``flow-api.yaml``) and what the ``speechmatics-flow`` 0.1.2 client sends and reads:

* client → server: ``StartConversation``, binary audio (``AddAudio``), ``AudioReceived``,
  ``AudioEnded``, ``ToolResult``, ``AddInput`` (client 0.1.3);
* server → client: ``ConversationStarted``, ``AudioAdded``, ``AddPartialTranscript``,
  ``AddTranscript``, ``ResponseStarted``, binary audio (pcm_s16le 16 kHz), ``ResponseCompleted``,
  ``ResponseInterrupted``, ``Info``, ``Warning``, ``Error``, ``ConversationEnding``,
  ``ConversationEnded``.

Unknown fields in a client message are ignored (newer clients add some); wrong types and
unknown message types are errors. The client treats every ``Error`` as fatal, so voxray
sends ``Error`` only when it ends the conversation and ``Warning`` for anything it recovers from.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from serve_app.protocols.speechmatics_session import SpeechmaticsProtocolError

Message = dict[str, Any]
ErrorType = Literal[
    "asr_error",
    "protocol_error",
    "config_error",
    "idle_timeout",
    "session_timeout",
    "not_allowed",
    "not_authorised",
    "quota_exceeded",
    "timelimit_exceeded",
    "job_error",
    "internal_error",
    "unknown_error",
]
WarningType = Literal[
    "high_asr_latency",
    "llm_error",
    "high_llm_latency",
    "llm_request_content_filter",
    "tts_error",
    "high_tts_latency",
    "protocol_error",
    "idle_timeout",
    "session_timeout",
]
Encoding = Literal["pcm_s16le", "pcm_f32le", "mulaw"]
TRANSCRIPT_FORMAT = "2.9"


class FlowProtocolError(SpeechmaticsProtocolError):
    """A client message voxray cannot accept; ends the conversation with an ``Error`` (a Flow type)."""

    def __init__(self, reason: str, type: ErrorType = "protocol_error") -> None:
        super().__init__(reason, type)
        self.type: ErrorType = type


class _Client(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class AudioFormat(_Client):
    """``audio_format``: raw audio, its encoding and sample rate."""

    type: Literal["raw"] = "raw"
    encoding: Encoding = "pcm_s16le"
    sample_rate: int = Field(default=16_000, ge=8_000, le=192_000)


class ConversationConfig(_Client):
    """``conversation_config``: which assistant (template) and its variables."""

    template_id: str = Field(min_length=1, max_length=200)
    template_variables: dict[str, str] = Field(default_factory=dict)


class ToolFunction(_Client):
    """A function the client offers the assistant."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Client):
    """One entry of ``tools``."""

    type: Literal["function"]
    function: ToolFunction


class StartConversation(_Client):
    """Opens the conversation; nothing else may come first."""

    message: Literal["StartConversation"]
    audio_format: AudioFormat = Field(default_factory=AudioFormat)
    conversation_config: ConversationConfig
    tools: list[Tool] = Field(default_factory=list)
    debug: dict[str, Any] = Field(default_factory=dict)


class AudioReceived(_Client):
    """The client's acknowledgement of one binary frame of reply audio."""

    message: Literal["AudioReceived"]
    seq_no: int
    buffering: float | None = None


class AudioEnded(_Client):
    """The client sent its last audio frame."""

    message: Literal["AudioEnded"]
    last_seq_no: int


class ToolResult(_Client):
    """The client's answer to a ``ToolInvoke``."""

    message: Literal["ToolResult"]
    id: str
    status: Literal["ok", "rejected", "failed"]
    content: str | None = None


class AddInput(_Client):
    """Text the assistant must take into account (client 0.1.3)."""

    message: Literal["AddInput"]
    input: str
    interrupt_response: bool = False
    immediate: bool = False


ClientMessage = Annotated[
    StartConversation | AudioReceived | AudioEnded | ToolResult | AddInput,
    Field(discriminator="message"),
]
CLIENT_MESSAGES = ("StartConversation", "AudioReceived", "AudioEnded", "ToolResult", "AddInput")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def parse_client_message(raw: str | bytes, max_bytes: int) -> Any:
    """Parse and validate one text message from a Flow client.

    Raises:
        FlowProtocolError: Too large, not JSON, not an object, no or an unknown ``message``,
            or a field of the wrong type; ``reason`` names the field.
    """
    if len(raw) > max_bytes:
        raise FlowProtocolError(f"Message of {len(raw)} bytes exceeds the maximum of {max_bytes} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FlowProtocolError(f"The message is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise FlowProtocolError("Expected a JSON object with a 'message' field.")
    kind = data.get("message")
    if kind not in CLIENT_MESSAGES:
        shown = json.dumps(kind)[:100]
        raise FlowProtocolError(
            f"Unknown message type {shown}; expected one of {', '.join(CLIENT_MESSAGES)}."
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"][1:]) or kind
        kind_of = "config_error" if kind == "StartConversation" else "protocol_error"
        raise FlowProtocolError(f"Invalid {kind} field '{where}': {error['msg']}.", kind_of) from None


# --- server messages ---------------------------------------------------------------------------


def conversation_started(conversation_id: str, language: str = "en") -> Message:
    """``ConversationStarted``: the client may now send audio."""
    return {
        "message": "ConversationStarted",
        "id": conversation_id,
        "asr_session_id": conversation_id,
        "language_pack_info": {
            "language_description": "English" if language == "en" else language,
            "word_delimiter": " ",
            "writing_direction": "left-to-right",
            "itn": True,
            "adapted": False,
        },
    }


def audio_added(seq_no: int) -> Message:
    """``AudioAdded``: binary frame number ``seq_no`` (from 1) was taken."""
    return {"message": "AudioAdded", "seq_no": seq_no}


_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]")
_EOS = {".", "?", "!"}


def transcript_results(text: str, start_s: float, end_s: float, language: str = "en") -> list[Message]:
    """Recognition results for ``text`` spoken between ``start_s`` and ``end_s``.

    voxray's ASR reports no per-word times yet, so each word's span is its share of the
    utterance by length (``metadata`` holds the exact utterance bounds), and confidence is
    not scored (1.0).
    """
    tokens = _TOKEN.findall(text)
    weights = [len(token) + 1 for token in tokens]
    total = sum(weights) or 1
    results, at = [], start_s
    for token, weight in zip(tokens, weights, strict=True):
        until = at + (end_s - start_s) * weight / total
        alternative = {"content": token, "confidence": 1.0, "language": language}
        if token[0].isalnum():
            results.append(_result("word", at, until, alternative))
        else:
            punctuation = _result("punctuation", until, until, alternative)
            punctuation |= {"attaches_to": "previous", "is_eos": token in _EOS}
            results.append(punctuation)
        at = until
    return results


def _result(kind: str, start: float, end: float, alternative: Message) -> Message:
    return {
        "type": kind,
        "start_time": round(start, 3),
        "end_time": round(end, 3),
        "alternatives": [alternative],
    }


def add_transcript(
    text: str, start_s: float, end_s: float, *, partial: bool, language: str = "en"
) -> Message:
    """``AddTranscript`` (final) or ``AddPartialTranscript`` for one utterance."""
    return {
        "message": "AddPartialTranscript" if partial else "AddTranscript",
        "format": TRANSCRIPT_FORMAT,
        "metadata": {"start_time": round(start_s, 3), "end_time": round(end_s, 3), "transcript": text},
        "results": transcript_results(text, start_s, end_s, language),
    }


def response_started(content: str, start_time: float) -> Message:
    """``ResponseStarted``: the assistant starts speaking ``content``."""
    return {"message": "ResponseStarted", "content": content, "start_time": round(start_time, 3)}


def response_ended(content: str, start_time: float, end_time: float, *, interrupted: bool) -> Message:
    """``ResponseCompleted``, or ``ResponseInterrupted`` when the user cut it short."""
    return {
        "message": "ResponseInterrupted" if interrupted else "ResponseCompleted",
        "content": content,
        "start_time": round(start_time, 3),
        "end_time": round(end_time, 3),
    }


def duration_limit_info(limit_s: float) -> Message:
    """``Info`` ``conversation_duration_limit``: the conversation ends after ``limit_s`` seconds."""
    return {
        "message": "Info",
        "type": "conversation_duration_limit",
        "reason": f"This conversation ends after {limit_s:g} seconds.",
        "conversation_duration_limit": int(limit_s),
    }


def warning(type: WarningType, reason: str) -> Message:
    """``Warning``: something went wrong and the conversation goes on."""
    return {"message": "Warning", "type": type, "reason": reason}


def error(type: ErrorType, reason: str) -> Message:
    """``Error``: the conversation ends (clients raise on it)."""
    return {"message": "Error", "type": type, "reason": reason}


def conversation_ending() -> Message:
    """``ConversationEnding``: the server is wrapping up."""
    return {"message": "ConversationEnding"}


def conversation_ended() -> Message:
    """``ConversationEnded``: the last message; clients wait for it before closing."""
    return {"message": "ConversationEnded"}
