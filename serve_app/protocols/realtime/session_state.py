"""The effective configuration of one Realtime session (what ``session.update`` changes).

Split from ``wire.py`` (parsing and errors); import it from there as ``rt.SessionState``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from serve_app.protocols.realtime.client_events import (
    AudioFormat,
    AudioFormatPCM,
    InputTranscription,
    SemanticVad,
    ServerVad,
    SessionConfig,
    SessionUpdateEvent,
)
from serve_app.protocols.realtime.errors import ProtocolError
from serve_app.protocols.realtime.server_events import PCM_24K, new_id


class SessionState(BaseModel):
    """The effective configuration of one Realtime session.

    Built from the server's defaults when the WebSocket opens (:meth:`from_defaults`), changed by
    ``session.update`` (:meth:`apply_update`) and reported by ``session.created`` /
    ``session.updated`` (:meth:`to_wire`: the GA ``RealtimeSessionCreateRequest`` shape plus
    ``id`` and ``object``). Audio is PCM16 24 kHz mono both ways; ``turn_detection=None`` means
    the client commits turns and asks for responses itself; ``max_output_tokens=None`` is "inf".
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    id: str = Field(default_factory=lambda: new_id("sess"))
    model: str = "voxray"
    instructions: str = ""
    output_modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["audio"])
    voice: str = "alloy"
    speed: float = Field(default=1.0, ge=0.25, le=1.5)
    transcription: InputTranscription | None = None
    turn_detection: ServerVad | None = Field(default_factory=ServerVad)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # What a server_vad update fills in for fields it leaves out when turn detection was off.
    _vad_defaults: ServerVad = PrivateAttr(default_factory=ServerVad)

    input_rate: ClassVar[int] = 24_000
    output_rate: ClassVar[int] = 24_000

    @classmethod
    def from_defaults(cls, session_id: str, defaults: Any, model: str = "voxray") -> SessionState:
        """A session with the server's defaults.

        Args:
            session_id: The ``sess_...`` id.
            defaults: ``serve_app.config.SessionDefaults`` (``instructions``, ``voice`` and
                ``turn_detection`` with ``threshold``, ``prefix_padding_ms``, ``silence_duration_ms``).
            model: The name reported as ``session.model``.
        """
        vad = defaults.turn_detection
        turn = ServerVad(
            threshold=vad.threshold,
            prefix_padding_ms=vad.prefix_padding_ms,
            silence_duration_ms=vad.silence_duration_ms,
        )
        config = {"instructions": defaults.instructions, "voice": defaults.voice, "turn_detection": turn}
        return cls(id=session_id, model=model, **config)

    def model_post_init(self, context: Any, /) -> None:
        """Remembers the initial server VAD settings as the defaults for later updates."""
        if self.turn_detection is not None:
            self._vad_defaults = self.turn_detection

    @property
    def create_response(self) -> bool:
        """Whether the end of detected speech starts a response."""
        return self.turn_detection is not None and self.turn_detection.create_response

    @property
    def interrupt_response(self) -> bool:
        """Whether detected speech cancels the response in progress (barge-in)."""
        return self.turn_detection is not None and self.turn_detection.interrupt_response

    @property
    def language(self) -> str | None:
        """The input language the client named for transcription, if any."""
        return self.transcription.language if self.transcription else None

    def apply_update(
        self,
        update: SessionUpdateEvent | SessionConfig,
        *,
        event_id: str | None = None,
        voice_locked: bool = False,
        semantic_vad_fallback: bool = False,
    ) -> None:
        """Merges a parsed ``session.update``: fields it carries replace the current ones.

        All or nothing: on error nothing changes. ``null`` turns ``transcription`` and
        ``turn_detection`` off; ``null`` elsewhere leaves the field unchanged. A ``server_vad``
        object keeps the current value of any field it leaves out.

        Args:
            update: The parsed event, or its ``session``.
            event_id: The client's ``event_id`` for errors (taken from ``update`` if an event).
            voice_locked: True once the session has produced audio; changing the voice is then
                an error, as in OpenAI's API.
            semantic_vad_fallback: Run ``semantic_vad`` requests as ``server_vad`` (keeping
                their ``create_response``/``interrupt_response``) instead of rejecting them.

        Raises:
            ProtocolError: ``invalid_value`` for formats other than 24 kHz ``audio/pcm`` and for
                ``semantic_vad`` (unless falling back); ``cannot_update_voice``.
        """
        if isinstance(update, SessionUpdateEvent):
            event_id, cfg = event_id or update.event_id, update.session
        else:
            cfg = update
        changes: dict[str, Any] = {
            name: getattr(cfg, name)
            for name in ("instructions", "output_modalities")
            if getattr(cfg, name) is not None
        }
        if cfg.max_output_tokens is not None:
            changes["max_output_tokens"] = None if cfg.max_output_tokens == "inf" else cfg.max_output_tokens
        audio_in = cfg.audio.input if cfg.audio else None
        audio_out = cfg.audio.output if cfg.audio else None
        if audio_in is not None:
            _require_pcm(audio_in.format, "session.audio.input.format.type", event_id)
            if "transcription" in audio_in.model_fields_set:
                changes["transcription"] = audio_in.transcription
            if "turn_detection" in audio_in.model_fields_set:
                changes["turn_detection"] = self._merge_turn_detection(
                    audio_in.turn_detection, semantic_vad_fallback, event_id
                )
        if audio_out is not None:
            _require_pcm(audio_out.format, "session.audio.output.format.type", event_id)
            if audio_out.voice is not None and audio_out.voice != self.voice:
                if voice_locked:
                    raise ProtocolError(
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        event_id,
                        "session.audio.output.voice",
                    )
                changes["voice"] = audio_out.voice
            if audio_out.speed is not None:
                changes["speed"] = audio_out.speed
        for name, value in changes.items():
            setattr(self, name, value)

    def _merge_turn_detection(
        self, requested: ServerVad | SemanticVad | None, fallback: bool, event_id: str | None
    ) -> ServerVad | None:
        if requested is None:
            return None
        if isinstance(requested, SemanticVad):
            if not fallback:
                raise ProtocolError(
                    "invalid_value",
                    "Unsupported value: 'semantic_vad'. voxray supports 'server_vad' turn detection, "
                    "or null for manual turns.",
                    event_id,
                    "session.audio.input.turn_detection.type",
                )
            fields = {"create_response", "interrupt_response"} & requested.model_fields_set
        else:
            fields = requested.model_fields_set - {"type"}
        base = self.turn_detection or self._vad_defaults
        return base.model_copy(update={name: getattr(requested, name) for name in fields})

    def to_wire(self) -> dict[str, Any]:
        """The session object of ``session.created`` / ``session.updated``."""
        turn = self.turn_detection.model_dump() if self.turn_detection else None
        transcription = self.transcription.model_dump() if self.transcription else None
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": dict(PCM_24K),
                    "transcription": transcription,
                    "noise_reduction": None,
                    "turn_detection": turn,
                },
                "output": {"format": dict(PCM_24K), "voice": self.voice, "speed": self.speed},
            },
            "max_output_tokens": "inf" if self.max_output_tokens is None else self.max_output_tokens,
            "tools": [],
            "tool_choice": "auto",
            "tracing": None,
        }


def _require_pcm(fmt: AudioFormat | None, param: str, event_id: str | None) -> None:
    if fmt is not None and not isinstance(fmt, AudioFormatPCM):
        raise ProtocolError(
            "invalid_value",
            f"Unsupported value: '{fmt.type}'. voxray supports only 'audio/pcm' at 24000 Hz.",
            event_id,
            param,
        )
