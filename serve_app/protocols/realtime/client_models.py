"""OpenAI Realtime (GA) client-side models: audio formats, session settings, items, response options.

The parts that client events carry (``client_events`` holds the events themselves); see
``client_events`` for the strict-but-tolerant rules they follow.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from serve_app.engine.audio.vad import MAX_PREFIX_PADDING_MS, MAX_SILENCE_DURATION_MS, VADParams

__all__ = [
    "AudioFormat",
    "AudioFormatPCM",
    "AudioFormatPCMA",
    "AudioFormatPCMU",
    "AudioInputUpdate",
    "AudioOutputUpdate",
    "AudioUpdate",
    "ContentPart",
    "InputAudioPart",
    "InputTextPart",
    "InputTranscription",
    "MessageItem",
    "OutputAudioPart",
    "ResponseAudio",
    "ResponseAudioOutput",
    "ResponseParams",
    "SemanticVad",
    "ServerVad",
    "SessionConfig",
    "TextPart",
    "TurnDetection",
    "WireModel",
    "decode_pcm16_base64",
]


class WireModel(BaseModel):
    """Base of all client-side wire models: strict on known fields, ignores unknown ones."""

    model_config = ConfigDict(strict=True, extra="ignore")


def _custom(code: str, message: str, **ctx: Any) -> PydanticCustomError:
    # Braces in the message would be read as template fields by pydantic-core.
    return PydanticCustomError(code, message.replace("{", "(").replace("}", ")"), ctx or None)


def decode_pcm16_base64(value: Any) -> Any:
    """Decodes base64 audio into bytes, checking it holds whole PCM16 samples.

    Missing ``=`` padding is tolerated (some encoders drop it); any other deviation from the
    standard alphabet is an error. ``None`` passes through for optional fields.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _custom("invalid_base64", "expected base64-encoded audio data") from exc
    elif not isinstance(value, bytes):
        raise _custom("invalid_type", "expected a string", expected="a base64 string")
    if len(value) % 2:
        message = f"expected whole 16-bit samples (an even number of bytes), but got {len(value)} bytes"
        raise _custom("invalid_value", message)
    return value


Pcm16Audio = Annotated[bytes, BeforeValidator(decode_pcm16_base64)]


def _voice_id(value: Any) -> Any:
    # GA accepts a custom voice as {"id": "voice_123"}; voxray treats both forms as a voice name.
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return value


Voice = Annotated[str, BeforeValidator(_voice_id)]


def _short(value: int) -> str:
    # A JSON integer may have thousands of digits; an error message quotes only its start.
    text = str(value)
    return text if len(text) <= 20 else f"{text[:17]}... ({len(text)} digits)"


def _max_output_tokens(value: Any) -> Any:
    if value == "inf" or value is None:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise _custom("invalid_type", "expected an integer or 'inf'", expected="an integer or 'inf'")
    if not 1 <= value <= 4096:
        raise _custom(
            "invalid_value", f"expected a value between 1 and 4096 or 'inf', but got {_short(value)}"
        )
    return value


MaxOutputTokens = Annotated[int | Literal["inf"], BeforeValidator(_max_output_tokens)]


def _normalise_modalities(value: Any) -> Any:
    # GA allows exactly one of ["audio"] (audio plus transcript) or ["text"]; beta clients send
    # ["text", "audio"], which means audio with a transcript, so it is folded into ["audio"].
    if not isinstance(value, list) or not all(v in ("text", "audio") for v in value):
        return value  # the type / literal checks report it
    if not value:
        raise _custom("invalid_value", "expected ['audio'] or ['text'], but got an empty array")
    return ["audio"] if "audio" in value else ["text"]


OutputModalities = Annotated[list[Literal["text", "audio"]], BeforeValidator(_normalise_modalities)]


# --- audio formats ---------------------------------------------------------------------------


class AudioFormatPCM(WireModel):
    """16-bit little-endian mono PCM at 24 kHz, the only format voxray streams."""

    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class AudioFormatPCMU(WireModel):
    """G.711 mu-law; parsed so the session can reject it by name."""

    type: Literal["audio/pcmu"] = "audio/pcmu"


class AudioFormatPCMA(WireModel):
    """G.711 A-law; parsed so the session can reject it by name."""

    type: Literal["audio/pcma"] = "audio/pcma"


def _format_tag(value: Any) -> Any:
    # The spec makes `type` optional on AudioPCM ({"rate": 24000} is valid), hence the default.
    if isinstance(value, dict):
        return value.get("type", "audio/pcm")
    return getattr(value, "type", None)


AudioFormat = Annotated[
    Annotated[AudioFormatPCM, Tag("audio/pcm")]
    | Annotated[AudioFormatPCMU, Tag("audio/pcmu")]
    | Annotated[AudioFormatPCMA, Tag("audio/pcma")],
    Discriminator(_format_tag),
]


# --- session configuration -------------------------------------------------------------------


class ServerVad(WireModel):
    """Server VAD turn detection. Defaults are OpenAI's; ``model_fields_set`` tells what was sent."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=VADParams.threshold, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=VADParams.prefix_padding_ms, ge=0, le=MAX_PREFIX_PADDING_MS)
    silence_duration_ms: int = Field(default=VADParams.silence_duration_ms, ge=0, le=MAX_SILENCE_DURATION_MS)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class SemanticVad(WireModel):
    """Semantic VAD turn detection: parsed so the session can report it as unsupported."""

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class InputTranscription(WireModel):
    """``audio.input.transcription``: asks for transcripts of the user's audio."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInputUpdate(WireModel):
    """``session.audio.input``. ``None`` in ``transcription``/``turn_detection`` means *off*."""

    format: AudioFormat | None = None
    transcription: InputTranscription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: dict[str, Any] | None = None  # accepted, not applied


class AudioOutputUpdate(WireModel):
    """``session.audio.output``."""

    format: AudioFormat | None = None
    voice: Voice | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class AudioUpdate(WireModel):
    """``session.audio``."""

    input: AudioInputUpdate | None = None
    output: AudioOutputUpdate | None = None


class SessionConfig(WireModel):
    """The ``session`` of a ``session.update``; only fields in ``model_fields_set`` were sent."""

    type: Literal["realtime"]
    instructions: str | None = None
    output_modalities: OutputModalities | None = None
    audio: AudioUpdate | None = None
    max_output_tokens: MaxOutputTokens | None = None
    model: str | None = None
    tools: list[dict[str, Any]] | None = None


# --- conversation items ----------------------------------------------------------------------


class InputTextPart(WireModel):
    """User or system text."""

    type: Literal["input_text"]
    text: str


class InputAudioPart(WireModel):
    """User audio (decoded PCM16 24 kHz) and/or its transcript."""

    type: Literal["input_audio"]
    audio: Pcm16Audio | None = None
    transcript: str | None = None

    @model_validator(mode="after")
    def _audio_or_transcript(self) -> InputAudioPart:
        if self.audio is None and self.transcript is None:
            raise _custom("missing_required_parameter", "expected 'audio' or 'transcript'", subpath="audio")
        return self


class TextPart(WireModel):
    """Assistant text; ``text`` is the beta name, ``output_text`` the GA one."""

    type: Literal["text", "output_text"]
    text: str


class OutputAudioPart(WireModel):
    """Assistant audio replayed from history; only the transcript is used."""

    type: Literal["output_audio"]
    transcript: str | None = None


ContentPart = Annotated[
    InputTextPart | InputAudioPart | TextPart | OutputAudioPart, Field(discriminator="type")
]

_PARTS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "user": ("input_text", "input_audio"),
    "system": ("input_text",),
    "assistant": ("output_text", "text", "output_audio"),
}


class MessageItem(WireModel):
    """A ``message`` conversation item; the only item type voxray accepts."""

    type: Literal["message"]
    role: Literal["user", "system", "assistant"]
    content: list[ContentPart] = Field(min_length=1)
    id: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _parts_fit_role(self) -> MessageItem:
        allowed = _PARTS_BY_ROLE[self.role]
        for index, part in enumerate(self.content):
            if part.type not in allowed:
                supported = ", ".join(repr(a) for a in allowed)
                raise _custom(
                    "invalid_value",
                    f"'{part.type}' content is not allowed in a {self.role} message; "
                    f"supported values are: {supported}",
                    subpath=f"content[{index}].type",
                )
        return self

    @property
    def text(self) -> str:
        """The item's text: text parts and transcripts joined by spaces (audio is skipped)."""
        pieces = [getattr(p, "text", None) or getattr(p, "transcript", None) for p in self.content]
        return " ".join(p for p in pieces if p)


class ResponseAudioOutput(WireModel):
    """``response.audio.output``: per-response voice/format override."""

    format: AudioFormat | None = None
    voice: Voice | None = None


class ResponseAudio(WireModel):
    """``response.audio``."""

    output: ResponseAudioOutput | None = None


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    # OpenAI's documented limits; enforcing them keeps response.done metadata small.
    if len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
        raise _custom("invalid_value", "expected at most 16 keys of <= 64 chars with values of <= 512 chars")
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


class ResponseParams(WireModel):
    """The optional ``response`` of ``response.create``: overrides for this response only."""

    instructions: str | None = None
    output_modalities: OutputModalities | None = None
    max_output_tokens: MaxOutputTokens | None = None
    conversation: Literal["auto", "none"] | None = None
    metadata: Metadata | None = None
    input: list[dict[str, Any]] | None = None
    audio: ResponseAudio | None = None
    tools: list[dict[str, Any]] | None = None
