"""The Speechmatics RT adapter: RT messages → live transcription calls; engine events → RT messages.

One :class:`RTSession` per WebSocket at ``/v2`` (or ``/v2/<language>``). The client sends
``StartRecognition`` (audio format and transcription settings) and gets ``RecognitionStarted``
at once (the ``speechmatics-rt`` SDK gives up after 5 s); then binary audio frames, each
answered by exactly one ``AudioAdded`` (the legacy CLI counts them with a semaphore and
crashes on an extra one). Words come back as ``AddPartialTranscript`` / ``AddTranscript``
(format 2.9, with speaker labels ``S1``… or ``UU``), ``EndOfUtterance`` when the client asked
for it; ``EndOfStream`` finalises everything and ends with ``EndOfTranscript``.

Audio: ``raw`` frames decode one by one; a ``file`` that is WAV decodes as it arrives, any
other file type is decoded whole (FFmpeg, through PyAV) when ``EndOfStream`` says it is complete.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.codecs import AudioFormatError, WavStream, decode_file, decode_raw
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.diarization import DEFAULT_THRESHOLD, threshold_for_sensitivity
from serve_app.engine.live.session import LiveTranscription
from serve_app.engine.live.settings import LiveSettings
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.speechmatics_rt import messages as rm
from serve_app.protocols.speechmatics_session import SpeechmaticsSession, close_error_type
from serve_app.server.limits import CloseConnection

logger = logging.getLogger("voxray")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
EndSoon = Callable[[float], None]
PROTOCOL = "speechmatics_rt"
FILE_RATE = 16_000  # compressed files are decoded straight to the ASR rate
_FEED_BYTES = 16_000 * 2 // 10  # decoded files go to the engine in 100 ms pieces


def rt_refusal(close: CloseConnection) -> list[dict[str, Any]]:
    """The ``Error`` that explains a close to an RT client."""
    return [
        rm.error(close_error_type(close.error_code, "job_error"), f"{close.message} ({close.error_code})")
    ]


class RTSession(SpeechmaticsSession):
    """One Speechmatics real-time transcription session over one WebSocket.

    Args:
        config: The application config (transcription policy, limits).
        models: The model endpoints (``asr``; ``speaker`` for diarization).
        vad: A fresh VAD stream for this session.
        emit: Sends one JSON message to the client.
        end_soon: Closes the connection normally after the given seconds.
        path_language: The language in the URL path (``/v2/<language>``), if any.
        vad_batcher: Shares VAD model calls with other sessions.
    """

    protocol = PROTOCOL

    def __init__(
        self,
        config: AppConfig,
        models: ModelClients,
        vad: VADStream,
        emit: Emit,
        end_soon: EndSoon,
        path_language: str | None = None,
        vad_batcher: VADBatcher | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.engine: LiveTranscription | None = None
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self._end_soon = end_soon
        self._path_language = path_language
        self._start: rm.StartRecognition | None = None
        self._settings: LiveSettings | None = None
        self._wav: WavStream | None = None
        self._file = bytearray()  # a non-WAV file, decoded at EndOfStream
        self._file_kind: str | None = None  # "wav" or "other", once the first bytes are in
        self._seq_no = 0
        self._finishing: asyncio.Task[None] | None = None
        self._final_speakers = False
        self._ended = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, preset: dict[str, Any] | None = None) -> None:
        """Nothing to say yet: the client speaks first (``StartRecognition``)."""

    @property
    def responding(self) -> bool:
        """Whether finals are still being produced after ``EndOfStream``."""
        return self._finishing is not None and not self._finishing.done()

    refusal = staticmethod(rt_refusal)

    async def _fail(self, error_type: rm.ErrorType, reason: str) -> None:
        """End the session with an ``Error`` (both real clients stop on it)."""
        if self._ended:
            return
        self._ended = True
        await self._send(rm.error(error_type, reason))
        self._end_soon(self._config.transcription.ending_grace_s)

    # -- client messages ---------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """Act on one client message: a bad one ends the session with an ``Error``."""
        if self._ended:
            return
        try:
            if isinstance(raw, bytes):
                await self._on_audio(raw)
            else:
                await self._on_message(rm.parse_client_message(raw, self._config.limits.max_message_bytes))
        except rm.RTProtocolError as exc:
            await self._fail(exc.type, exc.reason)
        except AudioFormatError as exc:
            await self._fail("invalid_audio_type", str(exc))
        except Exception as exc:  # a bug ends this session cleanly, never another one
            logger.exception("speechmatics rt session %s: unexpected error", self.id)
            await self._fail("unknown_error", f"Internal error: {exc}")

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, rm.StartRecognition):
            await self._on_start(message)
            return
        if self._start is None:
            raise rm.RTProtocolError(f"Send StartRecognition before {message.message}.")
        if isinstance(message, rm.EndOfStream):
            if self._finishing is None:
                self._finishing = asyncio.create_task(self._finish(message.last_seq_no))
        elif isinstance(message, rm.ForceEndOfUtterance):
            if self.engine is not None:
                await self.engine.force_end_of_utterance()
        elif isinstance(message, rm.SetRecognitionConfig):
            self._on_set_config(message.transcription_config)
        elif isinstance(message, rm.GetSpeakers):
            if message.final:
                self._final_speakers = True
            else:
                await self._emit(rm.speakers_result(self.engine.speakers() if self.engine else []))
        elif isinstance(message, rm.AddChannelAudio):
            raise rm.RTProtocolError(
                "Multichannel audio is not supported: send one channel as binary frames."
            )

    async def _on_start(self, start: rm.StartRecognition) -> None:
        if self._start is not None:
            raise rm.RTProtocolError("StartRecognition was already received; send it once.")
        config = start.transcription_config
        if self._path_language and self._path_language != config.language:
            raise rm.RTProtocolError(
                f"The URL says language {self._path_language!r} but transcription_config.language is "
                f"{config.language!r}; they must be the same.",
                "invalid_language",
            )
        if config.diarization in ("channel", "channel_and_speaker"):
            raise rm.RTProtocolError(
                f"diarization {config.diarization!r} needs multichannel audio, which voxray does not take; "
                "use 'speaker' or 'none'.",
                "invalid_config",
            )
        diarize = config.diarization == "speaker"
        if diarize and self._models.speaker is None:
            reason = "This server has no speaker model (config 'speaker'); words are labelled UU."
            await self._send(rm.warning("speaker_id", reason))
            diarize = False
        self._start = start
        self._settings = LiveSettings(
            input_rate=FILE_RATE,
            language=None if config.language == "auto" else config.language,
            partials=config.enable_partials,
            max_delay_ms=config.max_delay * 1000,
            diarization=diarize,
            max_speakers=config.speaker_diarization_config.max_speakers,
            silence_ms=self._silence_ms(config.conversation_config),
        )
        await self._emit(rm.recognition_started(self.id, config.language))
        if isinstance(start.audio_format, rm.RawFormat):
            self._settings.input_rate = start.audio_format.sample_rate
            self._open_engine(self._settings)

    def _silence_ms(self, conversation: rm.ConversationConfig | None) -> int | None:
        trigger = conversation.end_of_utterance_silence_trigger if conversation else 0.0
        return round(trigger * 1000) if trigger > 0 else None

    def _open_engine(self, settings: LiveSettings) -> None:
        labeller = None
        if settings.diarization and self._models.speaker is not None:
            assert self._start is not None
            sensitivity = self._start.transcription_config.speaker_diarization_config.speaker_sensitivity
            threshold = DEFAULT_THRESHOLD if sensitivity is None else threshold_for_sensitivity(sensitivity)
            labeller = SpeakerLabeller(self._models.speaker, settings.max_speakers, threshold)
        self.engine = LiveTranscription(
            self._models.asr,
            labeller,
            self._vad,
            settings,
            self._config.transcription.policy(),
            self._on_engine_event,
            self._vad_batcher,
        )

    def _on_set_config(self, change: rm.MidSessionConfig) -> None:
        assert self._settings is not None
        if change.language is not None:
            self._settings.language = None if change.language == "auto" else change.language
        if change.enable_partials is not None:
            self._settings.partials = change.enable_partials
        if change.max_delay is not None:
            self._settings.max_delay_ms = change.max_delay * 1000
        if change.conversation_config is not None:
            self._settings.silence_ms = self._silence_ms(change.conversation_config)
        if self.engine is not None:
            self.engine.configure(self._settings)

    async def _on_audio(self, data: bytes) -> None:
        if self._start is None or self._settings is None:
            raise rm.RTProtocolError("Send StartRecognition before audio.")
        limit = self._config.limits.max_message_bytes
        if len(data) > limit:
            raise rm.RTProtocolError(
                f"An audio frame of {len(data)} bytes exceeds the maximum of {limit} bytes."
            )
        self._seq_no += 1
        await self._emit(rm.audio_added(self._seq_no))
        if self._finishing is not None:
            await self._send(rm.warning("add_audio_after_eos", "Audio after EndOfStream is ignored."))
            return
        fmt = self._start.audio_format
        pcm16 = decode_raw(data, fmt.encoding) if isinstance(fmt, rm.RawFormat) else self._file_audio(data)
        if pcm16 and self.engine is not None:
            await self.engine.append_audio(pcm16)

    def _file_audio(self, data: bytes) -> bytes:
        """A piece of a ``file``: WAV decodes now, another type is kept for EndOfStream."""
        assert self._settings is not None
        if self._file_kind is None:
            self._file += data
            if len(self._file) < 12:
                return b""
            data, self._file = bytes(self._file), bytearray()
            self._file_kind = "wav" if WavStream.looks_like_wav(data) else "other"
            if self._file_kind == "wav":
                self._wav = WavStream()
        if self._file_kind == "other":
            if len(self._file) + len(data) > self._config.transcription.max_file_bytes:
                raise rm.RTProtocolError(
                    f"The audio file exceeds {self._config.transcription.max_file_bytes} bytes; send WAV "
                    "(decoded as it arrives) or raw audio for long recordings.",
                    "invalid_audio_type",
                )
            self._file += data
            return b""
        assert self._wav is not None
        pcm16 = self._wav.feed(data)
        if self.engine is None and self._wav.sample_rate is not None:
            self._settings.input_rate = self._wav.sample_rate
            self._open_engine(self._settings)
        return pcm16

    async def _finish(self, last_seq_no: int) -> None:
        """The client sent everything: finalise every word, then ``EndOfTranscript``."""
        if last_seq_no > self._seq_no:
            # Lower is normal: the speechmatics-rt SDK sends the last AudioAdded it had read.
            reason = f"EndOfStream says {last_seq_no} audio frames were sent, but {self._seq_no} arrived."
            await self._fail("protocol_error", reason)
            return
        try:
            if self._file_kind == "other":
                pcm16 = await asyncio.to_thread(decode_file, bytes(self._file), FILE_RATE)
                self._file.clear()
                assert self._settings is not None
                self._settings.input_rate = FILE_RATE
                self._open_engine(self._settings)
                assert self.engine is not None
                for at in range(0, len(pcm16), _FEED_BYTES):
                    await self.engine.append_audio(pcm16[at : at + _FEED_BYTES])
            elif self._file_kind == "wav" and self.engine is None:
                raise rm.RTProtocolError(
                    "The WAV file ended before its audio data began.", "invalid_audio_type"
                )
        except AudioFormatError as exc:
            await self._fail("invalid_audio_type", str(exc))
            return
        except rm.RTProtocolError as exc:
            await self._fail(exc.type, exc.reason)
            return
        if self.engine is not None:
            await self.engine.end_of_stream()
        if self._ended:
            return  # an Error already ended the session meanwhile
        if self._final_speakers:
            await self._emit(rm.speakers_result(self.engine.speakers() if self.engine else []))
        self._ended = True
        await self._emit(rm.end_of_transcript())
        # Both real clients close as soon as EndOfTranscript arrives: let them.
        self._end_soon(self._config.transcription.ending_grace_s)

    # -- engine events -----------------------------------------------------------------------

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        if self._ended or self._settings is None:
            return
        language = self._settings.language or "en"
        match event:
            case ev.TranscriptPartial(words=words, audio_start_ms=start, audio_end_ms=end) if words:
                if self._settings.partials:
                    await self._emit(rm.transcript(words, start, end, language, partial=True))
            case ev.WordsFinal(words=words, audio_start_ms=start, audio_end_ms=end) if words:
                await self._emit(rm.transcript(words, start, end, language, partial=False))
            case ev.UtteranceEnded(audio_start_ms=start, audio_end_ms=end, forced=forced):
                if forced or self._settings.silence_ms is not None:
                    await self._emit(rm.end_of_utterance(start, end, forced=forced))
            case ev.ErrorOccurred(code="transcription_failed", message=message):
                await self._fail("job_error", message)
