"""OpenAI Realtime transcription sessions: ``/v1/realtime?intent=transcription``.

The same live transcription engine as Speechmatics RT, in OpenAI's words. The client sends
``session.update`` with ``session.type: "transcription"`` and ``input_audio_buffer.append``;
no assistant ever replies. Each utterance the server VAD finds (or each manual
``input_audio_buffer.commit`` when ``turn_detection`` is null) becomes a user item:
``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed``, then
``conversation.item.input_audio_transcription.delta`` events, which only append (so they
carry only words two decodes agreed on), and ``.completed`` with the whole transcript.

Who spoke: a ``transcription.model`` containing ``diarize`` (as OpenAI's
``gpt-4o-transcribe-diarize``) turns on diarization, and each utterance's speaker turns come
as ``conversation.item.input_audio_transcription.segment`` events (``speaker`` ``S1``, ``S2``…,
``start``/``end`` in seconds of the stream), before its ``.completed``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.codecs import ALAW, MULAW
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.live.session import LiveTranscription
from serve_app.engine.live.settings import LiveSettings
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.live.words import text_of
from serve_app.engine.model_clients import ModelClients
from serve_app.observability.recorder import record_error
from serve_app.protocols.realtime import server_events as se
from serve_app.protocols.realtime.errors import ProtocolError
from serve_app.server.limits import CloseConnection, InvalidEventBudget

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
PROTOCOL = "realtime"
_TRANSCRIPTION = "conversation.item.input_audio_transcription"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Format(_Wire):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int = 24_000


class _Transcription(_Wire):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class _ServerVad(_Wire):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    silence_duration_ms: int | None = Field(default=None, ge=100, le=10_000)


class _Input(_Wire):
    format: _Format | None = None
    transcription: _Transcription | None = None
    turn_detection: _ServerVad | None = Field(default_factory=_ServerVad)


class _Audio(_Wire):
    input: _Input | None = None


class _Session(_Wire):
    type: Literal["transcription"]
    audio: _Audio | None = None


class _SessionUpdate(_Wire):
    type: Literal["session.update"]
    event_id: str | None = None
    session: _Session


class _Append(_Wire):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class _Commit(_Wire):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class _Clear(_Wire):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


_Event = Annotated[_SessionUpdate | _Append | _Commit | _Clear, Field(discriminator="type")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(_Event)
_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class TranscriptionSession:
    """One OpenAI Realtime transcription session over one WebSocket.

    Args:
        config: The application config (transcription policy, limits).
        models: The model endpoints (``asr``; ``speaker`` for diarization).
        vad: A fresh VAD stream for this session.
        emit: Sends one server event to the client.
        vad_batcher: Shares VAD model calls with other sessions.
    """

    protocol = PROTOCOL

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.id = se.new_id("sess")
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self._format = _Format()
        self._transcription = _Transcription(model="whisper-1", language=None)
        self._turn_detection: _ServerVad | None = _ServerVad()
        self._invalid_events = InvalidEventBudget(config.limits.max_invalid_events)
        self.engine: LiveTranscription | None = None
        self._sent: dict[str, str] = {}  # item id -> transcript text already sent as deltas
        self._final: dict[str, list[ev.TimedWord]] = {}
        self._previous_item: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        """``session.created`` (a client secret's preset session does not apply here)."""
        await self._emit(se.session_created(self._wire()))

    @property
    def responding(self) -> bool:
        """Transcription sessions never reply."""
        return False

    async def close(self) -> None:
        """Stop all work; the connection is gone."""
        if self.engine is not None:
            await self.engine.close()

    def closing_message(self, close: CloseConnection) -> list[dict[str, Any]]:
        """The ``error`` event sent just before the server closes the connection (counted)."""
        record_error(self.id, PROTOCOL, close.error_type, close.error_code, close.message)
        return [close.error]

    def _wire(self) -> dict[str, Any]:
        fmt = {
            "type": self._format.type,
            **({"rate": self._format.rate} if self._format.type == "audio/pcm" else {}),
        }
        detection = None
        if self._turn_detection is not None:
            silence = self._turn_detection.silence_duration_ms or self._config.transcription.silence_ms
            detection = {"type": "server_vad", "silence_duration_ms": silence}
        return {
            "id": self.id,
            "object": "realtime.transcription_session",
            "type": "transcription",
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": self._transcription.model_dump(),
                    "turn_detection": detection,
                    "noise_reduction": None,
                }
            },
            "include": [],
        }

    # -- client events -----------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """Parse and act on one client event; a bad one is an ``error`` event, the session goes on.

        Raises:
            CloseConnection: Too many invalid events within a minute.
        """
        try:
            event = self._parse(raw)
            if isinstance(event, _SessionUpdate):
                await self._on_update(event)
            elif isinstance(event, _Append):
                await self._on_append(event)
            elif isinstance(event, _Commit):
                if self.engine is not None:
                    await self.engine.force_end_of_utterance()
            elif isinstance(event, _Clear):
                await self._emit(se.input_audio_buffer_cleared())
        except ProtocolError as exc:
            await self._send_error(exc.to_event())
            self._invalid_events.spend()
        except Exception as exc:  # a bug costs one error event, never the connection
            logger.exception("transcription session %s: unexpected error", self.id)
            await self._send_error(se.error_event("server_error", "internal_error", f"Internal error: {exc}"))

    async def _send_error(self, event: dict[str, Any]) -> None:
        error = event["error"]
        record_error(self.id, PROTOCOL, str(error["type"]), str(error["code"]), str(error["message"]))
        await self._emit(event)

    def _parse(self, raw: str | bytes) -> Any:
        limit = self._config.limits.max_message_bytes
        if isinstance(raw, bytes) or len(raw) > limit:
            raise ProtocolError("invalid_event", f"Send JSON text events of at most {limit} bytes.")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError("invalid_json", f"The event is not valid JSON: {exc}.") from None
        kind = data.get("type") if isinstance(data, dict) else None
        event_id = data.get("event_id") if isinstance(data, dict) else None
        if kind not in _EVENTS:
            raise ProtocolError(
                "unsupported_event_type",
                f"A transcription session takes {', '.join(_EVENTS)}; not {json.dumps(kind)[:80]}.",
                event_id=event_id if isinstance(event_id, str) else None,
            )
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"][1:])
            raise ProtocolError(
                "invalid_value", f"Invalid '{where}': {error['msg']}.", event_id, where
            ) from None

    async def _on_update(self, event: _SessionUpdate) -> None:
        audio_in = event.session.audio.input if event.session.audio else None
        if audio_in is not None:
            if audio_in.format is not None:
                if self.engine is not None and audio_in.format != self._format:
                    raise ProtocolError(
                        "invalid_value",
                        "The audio format cannot change once audio was sent.",
                        event.event_id,
                        "session.audio.input.format",
                    )
                self._format = audio_in.format
            if "transcription" in audio_in.model_fields_set and audio_in.transcription is not None:
                self._transcription = audio_in.transcription
            if "turn_detection" in audio_in.model_fields_set:
                self._turn_detection = audio_in.turn_detection
        if self.engine is not None:
            self.engine.configure(self._settings())
        await self._emit(se.session_updated(self._wire()))

    def _rate(self) -> int:
        return self._format.rate if self._format.type == "audio/pcm" else 8000

    def _settings(self) -> LiveSettings:
        model = self._transcription.model or ""
        diarize = "diarize" in model and self._models.speaker is not None
        silence = self._turn_detection.silence_duration_ms if self._turn_detection else None
        return LiveSettings(
            input_rate=self._rate(),
            language=self._transcription.language or self._config.asr.language,
            partials=True,
            max_delay_ms=self._config.transcription.max_delay_s * 1000,
            diarization=diarize,
            silence_ms=silence,
            manual_commit=self._turn_detection is None,
        )

    async def _on_append(self, event: _Append) -> None:
        try:
            data = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                "invalid_value", "audio is not valid base64.", event.event_id, "audio"
            ) from None
        if self._format.type == "audio/pcm":
            if len(data) % 2:
                raise ProtocolError(
                    "invalid_value", "PCM16 audio must be a whole number of samples.", event.event_id, "audio"
                )
            pcm16 = data
        else:
            table = MULAW if self._format.type == "audio/pcmu" else ALAW
            import numpy as np

            pcm16 = table[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
        if self.engine is None:
            settings = self._settings()
            labeller = SpeakerLabeller(self._models.speaker, None) if settings.diarization else None
            self.engine = LiveTranscription(
                self._models.asr,
                labeller,
                self._vad,
                settings,
                self._config.transcription.policy(),
                self._on_engine_event,
                self._vad_batcher,
            )
        await self.engine.append_audio(pcm16)

    # -- engine events -----------------------------------------------------------------------

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        match event:
            case ev.SpeechStarted(item_id=item_id, audio_start_ms=start):
                if self._turn_detection is not None:
                    await self._emit(se.speech_started(start, item_id))
            case ev.SpeechStopped(item_id=item_id, audio_end_ms=end):
                if self._turn_detection is not None:
                    await self._emit(se.speech_stopped(end, item_id))
                await self._emit(se.input_audio_buffer_committed(item_id, self._previous_item))
                self._previous_item = item_id
            case ev.TranscriptPartial(item_id=item_id, words=words, stable_words=stable):
                await self._delta(item_id, self._final.get(item_id, []) + list(words[:stable]))
            case ev.WordsFinal(item_id=item_id, words=words):
                self._final.setdefault(item_id, []).extend(words)
                await self._delta(item_id, self._final[item_id])
            case ev.UtteranceEnded(
                item_id=item_id, text=text, words=words, audio_start_ms=start, audio_end_ms=end
            ):
                await self._delta(item_id, list(words))
                for segment in _speaker_segments(item_id, words):
                    await self._emit(segment)
                await self._emit(se.transcription_completed(item_id, text, (end - start) / 1000))
                self._sent.pop(item_id, None)
                self._final.pop(item_id, None)
            case ev.ErrorOccurred(type=error_type, code=code, message=message):
                await self._send_error(se.error_event(error_type, code, message))

    async def _delta(self, item_id: str, words: list[ev.TimedWord]) -> None:
        """Send what ``words`` add to the text already sent, if they only add to it."""
        text = text_of(words)
        sent = self._sent.get(item_id, "")
        if len(text) > len(sent) and text.startswith(sent):
            self._sent[item_id] = text
            await self._emit(se.transcription_delta(item_id, text[len(sent) :]))


def _speaker_segments(item_id: str, words: tuple[ev.TimedWord, ...]) -> list[dict[str, Any]]:
    """One ``…transcription.segment`` event per run of words by one speaker (diarization on)."""
    runs: list[list[ev.TimedWord]] = []
    for word in words:
        if word.speaker is None:
            return []
        if runs and (runs[-1][-1].speaker == word.speaker or word.is_punctuation):
            runs[-1].append(word)
        else:
            runs.append([word])
    return [
        se.transcription_segment(
            item_id, text_of(run), f"S{run[0].speaker}", run[0].start_ms / 1000, run[-1].end_ms / 1000
        )
        for run in runs
    ]
