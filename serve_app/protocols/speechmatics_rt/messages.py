"""Speechmatics RT messages: client messages validated with pydantic, server messages built.

The shapes follow Speechmatics' AsyncAPI spec (``realtime.yaml``) and what the real clients
(``speechmatics-python`` 5.0.0.post1's CLI, the ``speechmatics-rt`` 1.2.1 SDK) send and read.
Unknown fields are ignored, never fatal: clients send options voxray does not implement
(``operating_point``, ``model``, ``additional_vocab``, ``streaming_mode`` …).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from serve_app.engine.events import TimedWord
from serve_app.protocols.speechmatics_session import SpeechmaticsProtocolError

ErrorType = Literal[
    "invalid_message",
    "invalid_model",
    "invalid_language",
    "invalid_config",
    "invalid_audio_type",
    "not_authorised",
    "not_allowed",
    "job_error",
    "protocol_error",
    "quota_exceeded",
    "idle_timeout",
    "session_timeout",
    "unknown_error",
]
WarningType = Literal["duration_limit_exceeded", "add_audio_after_eos", "speaker_id", "unsupported_option"]
FORMAT = "2.9"


class RTProtocolError(SpeechmaticsProtocolError):
    """A client message voxray cannot accept: an ``Error`` (an RT error type), then a close."""

    def __init__(self, reason: str, type: ErrorType = "protocol_error") -> None:
        super().__init__(reason, type)
        self.type: ErrorType = type


class _Client(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RawFormat(_Client):
    """Raw samples of one encoding at one rate."""

    type: Literal["raw"]
    encoding: Literal["pcm_s16le", "pcm_f32le", "mulaw"]
    sample_rate: int = Field(ge=4000, le=192_000)


class FileFormat(_Client):
    """A whole audio file (WAV decodes as it arrives; other types when complete)."""

    type: Literal["file"]


class SpeakerDiarizationConfig(_Client):
    """``speaker_diarization_config``: voxray honours ``max_speakers``."""

    max_speakers: int | None = Field(default=None, ge=2, le=100)
    prefer_current_speaker: bool = False
    speaker_sensitivity: float | None = Field(default=None, ge=0.0, le=1.0)


class ConversationConfig(_Client):
    """``conversation_config``: ``EndOfUtterance`` after this much silence (0: never)."""

    end_of_utterance_silence_trigger: float = Field(default=0.0, ge=0.0, le=2.0)


class TranscriptionConfig(_Client):
    """``transcription_config`` of ``StartRecognition`` (and ``SetRecognitionConfig``)."""

    language: str = Field(default="en", min_length=2, max_length=16)
    enable_partials: bool = False
    max_delay: float = Field(default=4.0, ge=0.7, le=20.0)
    diarization: Literal["none", "speaker", "channel", "channel_and_speaker"] = "none"
    speaker_diarization_config: SpeakerDiarizationConfig = Field(default_factory=SpeakerDiarizationConfig)
    conversation_config: ConversationConfig = Field(default_factory=ConversationConfig)


class MidSessionConfig(_Client):
    """What ``SetRecognitionConfig`` may change."""

    language: str | None = Field(default=None, min_length=2, max_length=16)
    enable_partials: bool | None = None
    max_delay: float | None = Field(default=None, ge=0.7, le=20.0)
    conversation_config: ConversationConfig | None = None


class StartRecognition(_Client):
    """Starts the session: audio format and transcription settings."""

    message: Literal["StartRecognition"]
    audio_format: Annotated[RawFormat | FileFormat, Field(discriminator="type")]
    transcription_config: TranscriptionConfig


class EndOfStream(_Client):
    """No more audio: ``last_seq_no`` is how many audio frames the client sent."""

    message: Literal["EndOfStream"]
    last_seq_no: int = Field(ge=0)


class SetRecognitionConfig(_Client):
    """Changes settings mid-session."""

    message: Literal["SetRecognitionConfig"]
    transcription_config: MidSessionConfig


class ForceEndOfUtterance(_Client):
    """Finalise the utterance in progress now."""

    message: Literal["ForceEndOfUtterance"]
    timestamp: float | None = Field(default=None, ge=0.0)


class GetSpeakers(_Client):
    """Asks for the speakers heard so far (``final``: once, at the end)."""

    message: Literal["GetSpeakers"]
    final: bool = False


class AddChannelAudio(_Client):
    """Multichannel audio: not served (voxray transcribes one channel)."""

    message: Literal["AddChannelAudio"]


ClientMessage = Annotated[
    StartRecognition
    | EndOfStream
    | SetRecognitionConfig
    | ForceEndOfUtterance
    | GetSpeakers
    | AddChannelAudio,
    Field(discriminator="message"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)
CLIENT_MESSAGES = (
    "StartRecognition",
    "EndOfStream",
    "SetRecognitionConfig",
    "ForceEndOfUtterance",
    "GetSpeakers",
    "AddChannelAudio",
)


def parse_client_message(raw: str, max_bytes: int) -> Any:
    """Parse and validate one text message.

    Raises:
        RTProtocolError: Too large, not JSON, not an object, an unknown ``message``, or a
            field of the wrong type (``invalid_config`` for configuration, naming the field).
    """
    if len(raw) > max_bytes:
        raise RTProtocolError(f"Message of {len(raw)} bytes exceeds the maximum of {max_bytes} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RTProtocolError(f"The message is not valid JSON: {exc}.", "invalid_message") from None
    if not isinstance(data, dict):
        raise RTProtocolError("Expected a JSON object with a 'message' field.", "invalid_message")
    kind = data.get("message")
    if kind not in CLIENT_MESSAGES:
        shown = json.dumps(kind)[:100]
        raise RTProtocolError(
            f"Unknown message type {shown}; expected one of {', '.join(CLIENT_MESSAGES)}.", "invalid_message"
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"][1:]) or kind
        kind_of: ErrorType = (
            "invalid_config" if kind in ("StartRecognition", "SetRecognitionConfig") else "invalid_message"
        )
        if where.startswith("audio_format"):
            kind_of = "invalid_audio_type"
        raise RTProtocolError(f"Invalid {kind} field '{where}': {error['msg']}.", kind_of) from None


# --- server messages ---------------------------------------------------------------------------


def recognition_started(session_id: str, language: str) -> dict[str, Any]:
    """The session is ready for audio."""
    return {
        "message": "RecognitionStarted",
        "id": session_id,
        "orchestrator_version": "voxray",
        "language_pack_info": {
            "language_description": language,
            "word_delimiter": " ",
            "writing_direction": "left-to-right",
            "itn": False,
            "adapted": False,
        },
    }


def audio_added(seq_no: int) -> dict[str, Any]:
    """One binary audio frame arrived (exactly one per frame)."""
    return {"message": "AudioAdded", "seq_no": seq_no}


def speaker_label(speaker: int | None) -> str:
    """``S1``, ``S2``… or ``UU`` (unknown: diarization off)."""
    return f"S{speaker}" if speaker else "UU"


def _result(word: TimedWord, language: str, is_eos: bool) -> dict[str, Any]:
    punctuation = word.is_punctuation
    result: dict[str, Any] = {
        "type": "punctuation" if punctuation else "word",
        "start_time": round(word.start_ms / 1000, 3),
        "end_time": round(word.end_ms / 1000, 3),
        "alternatives": [
            {
                "content": word.text,
                "confidence": round(word.confidence, 3),
                "language": language,
                "speaker": speaker_label(word.speaker),
            }
        ],
    }
    if punctuation:
        result["attaches_to"] = "previous"
        result["is_eos"] = is_eos
    return result


def transcript(
    words: tuple[TimedWord, ...] | list[TimedWord],
    start_ms: float,
    end_ms: float,
    language: str,
    *,
    partial: bool,
    forced: bool = False,
) -> dict[str, Any]:
    """``AddPartialTranscript`` or ``AddTranscript`` (format 2.9) for ``words``."""
    results = [_result(w, language, is_eos=w.text in (".", "?", "!")) for w in words]
    text = "".join((w.text if w.is_punctuation or i == 0 else " " + w.text) for i, w in enumerate(words))
    message: dict[str, Any] = {
        "message": "AddPartialTranscript" if partial else "AddTranscript",
        "format": FORMAT,
        "metadata": {
            "start_time": round(start_ms / 1000, 3),
            "end_time": round(end_ms / 1000, 3),
            "transcript": text + (" " if text and not partial else ""),
        },
        "results": results,
    }
    if forced:
        message["forced"] = True
    return message


def end_of_utterance(start_ms: float, end_ms: float, forced: bool = False) -> dict[str, Any]:
    """The speaker stopped (silence trigger) or the client forced the end."""
    message: dict[str, Any] = {
        "message": "EndOfUtterance",
        "metadata": {"start_time": round(start_ms / 1000, 3), "end_time": round(end_ms / 1000, 3)},
    }
    if forced:
        message["forced"] = True
    return message


def speakers_result(speakers: list[dict[str, Any]]) -> dict[str, Any]:
    """``SpeakersResult``: voxray's speaker identifiers are its session-local labels."""
    return {
        "message": "SpeakersResult",
        "speakers": [
            {"label": speaker_label(s["label"]), "speaker_identifiers": [f"voxray-{s['label']}"]}
            for s in speakers
        ],
    }


def end_of_transcript() -> dict[str, Any]:
    """Every final was sent."""
    return {"message": "EndOfTranscript"}


def info(type: str, reason: str, **extra: Any) -> dict[str, Any]:
    """An ``Info`` message."""
    return {"message": "Info", "type": type, "reason": reason, **extra}


def warning(type: WarningType, reason: str) -> dict[str, Any]:
    """A ``Warning``: the session goes on."""
    return {"message": "Warning", "type": type, "reason": reason}


def error(type: ErrorType, reason: str) -> dict[str, Any]:
    """An ``Error``: the session ends."""
    return {"message": "Error", "type": type, "reason": reason}
