"""What a voice session is set to do, as the engine reads it.

A protocol adapter owns its session's settings in its own wire shape (OpenAI Realtime's
``SessionState``, Flow's template) and hands the engine any object with these attributes:
:class:`SessionSettings` is the contract, :class:`VoiceSettings` a plain implementation for
adapters without a settings model of their own. After changing them the adapter calls
``VoiceSession.settings_changed()`` so the VAD picks up new turn detection values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.engine.audio.vad import VADParams


class TurnDetectionSettings(Protocol):
    """Server VAD turn detection, as the engine reads it."""

    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool
    interrupt_response: bool


class SessionSettings(Protocol):
    """The settings the engine reads from an adapter's session state.

    Attributes:
        id: The session id (logs and turn lines).
        instructions: The system prompt.
        voice: The TTS voice.
        output_modalities: ``["audio"]`` to speak replies, ``["text"]`` for text only.
        max_output_tokens: Reply length cap, ``None`` for the config's.
        turn_detection: Server VAD settings; ``None`` when the client ends turns itself.
        language: The input language for ASR, ``None`` for the config's.
        input_rate: Sample rate of the PCM16 input audio.
        output_rate: Sample rate the reply audio is resampled to.
    """

    id: str
    instructions: str
    voice: str
    output_modalities: Any
    max_output_tokens: int | None
    turn_detection: Any
    input_rate: int
    output_rate: int

    @property
    def language(self) -> str | None:
        """The input language, if the client named one."""
        ...

    @property
    def create_response(self) -> bool:
        """Whether the end of detected speech starts a reply."""
        ...

    @property
    def interrupt_response(self) -> bool:
        """Whether detected speech cancels the reply in progress (barge-in)."""
        ...


@dataclass
class TurnDetection:
    """Server VAD settings (defaults: ``VADParams``'s, the one source of them)."""

    threshold: float = VADParams.threshold
    prefix_padding_ms: int = VADParams.prefix_padding_ms
    silence_duration_ms: int = VADParams.silence_duration_ms
    create_response: bool = True
    interrupt_response: bool = True

    @classmethod
    def from_defaults(cls, defaults: Any) -> TurnDetection:
        """From ``SessionDefaults.turn_detection`` of the app config."""
        return cls(defaults.threshold, defaults.prefix_padding_ms, defaults.silence_duration_ms)


@dataclass
class VoiceSettings:
    """A plain :class:`SessionSettings` for adapters that keep no wire model of their own."""

    id: str
    instructions: str
    voice: str
    input_rate: int
    output_rate: int
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    input_language: str | None = None

    @classmethod
    def from_defaults(
        cls, session_id: str, defaults: Any, input_rate: int, output_rate: int
    ) -> VoiceSettings:
        """The config's session defaults (``AppConfig.session``) at the given audio rates."""
        return cls(
            id=session_id,
            instructions=defaults.instructions,
            voice=defaults.voice,
            input_rate=input_rate,
            output_rate=output_rate,
            turn_detection=TurnDetection.from_defaults(defaults.turn_detection),
        )

    @property
    def language(self) -> str | None:
        """The input language for ASR, if set."""
        return self.input_language

    @property
    def create_response(self) -> bool:
        """Whether the end of detected speech starts a reply."""
        return self.turn_detection is not None and self.turn_detection.create_response

    @property
    def interrupt_response(self) -> bool:
        """Whether detected speech cancels the reply in progress."""
        return self.turn_detection is not None and self.turn_detection.interrupt_response
