"""Riva speech recognition on the live transcription engine: ``StreamingRecognize`` and ``Recognize``.

``StreamingRecognize`` (:class:`RivaStreamingRecognition`, one per gRPC stream, run by
``GrpcStream``): the first message must be a ``streaming_config``; then ``audio_content``
only. The server VAD cuts the audio into utterances; with ``interim_results`` each decode of
the open utterance comes back as an interim result (``is_final`` false, ``stability`` the
share of words two decodes agreed on), and words become final results as the engine settles
them (at the end of each utterance, or earlier in a long one). The client's half-close
finalises the open utterance; the call then ends OK.

``Recognize`` (:func:`recognize`): the whole recording in one request, transcribed by the same
engine, one result per utterance. ``GetRivaSpeechRecognitionConfig``:
:func:`~serve_app.protocols.riva.options.recognition_config`.

Errors end the call with a status: ``INVALID_ARGUMENT`` for a request voxray cannot take
(the message says what to send), ``RESOURCE_EXHAUSTED`` past a limit (which, and how much),
``INTERNAL`` when the ASR model failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from serve_app.config import AppConfig
from serve_app.engine import events as ev
from serve_app.engine.audio.vad import VADStream
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.conversation import new_id
from serve_app.engine.live.models import ASR_RATE
from serve_app.engine.live.session import LiveTranscription
from serve_app.engine.live.settings import LiveSettings
from serve_app.engine.live.speakers import SpeakerLabeller
from serve_app.engine.model_clients import ModelClients
from serve_app.protocols.grpc_api.proto import riva_asr_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument
from serve_app.protocols.riva.audio_in import RivaAudioIn, decode_whole
from serve_app.protocols.riva.options import RivaOptions, recognition_config, recognition_options
from serve_app.protocols.riva.results import speech_result, streaming_result

__all__ = ["PROTOCOL", "RivaStreamingRecognition", "recognition_config", "recognize"]

logger = logging.getLogger("voxray")

PROTOCOL = "riva_asr"
Emit = Callable[[Message], Awaitable[None]]
_FEED_BYTES = ASR_RATE * 2 // 10  # audio decoded at once goes to the engine in 100 ms pieces


def live_engine(
    app: AppConfig,
    models: ModelClients,
    vad: VADStream,
    settings: LiveSettings,
    emit: ev.EventSink,
    vad_batcher: VADBatcher | None,
) -> LiveTranscription:
    """A live transcription engine for ``settings`` (speaker labels when diarization is on)."""
    labeller = None
    if settings.diarization and models.speaker is not None:
        labeller = SpeakerLabeller(models.speaker, settings.max_speakers)
    return LiveTranscription(
        models.asr, labeller, vad, settings, app.transcription.policy(), emit, vad_batcher
    )


async def _feed(engine: LiveTranscription, pcm16: bytes) -> None:
    for at in range(0, len(pcm16), _FEED_BYTES):
        await engine.append_audio(pcm16[at : at + _FEED_BYTES])


def _asr_failed(message: str) -> GrpcAbort:
    return GrpcAbort(
        grpc.StatusCode.INTERNAL, f"{message} (voxray's ASR model failed; retry, or see its log)."
    )


class RivaStreamingRecognition:
    """One ``StreamingRecognize`` call: a :class:`~serve_app.protocols.grpc_api.stream.GrpcSession`.

    Args:
        config: The application config (transcription policy, limits, default language).
        models: The model endpoints (``asr``; ``speaker`` for diarization).
        vad: A fresh VAD stream for this call.
        emit: Sends one ``StreamingRecognizeResponse`` to the client.
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
        self.id = new_id("riva")
        self.engine: LiveTranscription | None = None
        self._config = config
        self._models = models
        self._vad = vad
        self._vad_batcher = vad_batcher
        self._emit = emit
        self._options: RivaOptions | None = None
        self._interim = False
        self._audio: RivaAudioIn | None = None
        self._request_id: Any = None  # the config message's RequestId, echoed in every response
        self._failure: GrpcAbort | None = None
        self._finishing = False

    @property
    def responding(self) -> bool:
        """Whether the last finals are being worked out after the client's half-close."""
        return self._finishing

    async def handle_request(self, request: riva_asr_pb2.StreamingRecognizeRequest) -> None:
        """Take one client message: the config first, then audio.

        Raises:
            GrpcAbort: A message out of order or unusable, or the ASR model failed.
        """
        self._raise_failure()
        kind = request.WhichOneof("streaming_request")
        if self._options is None:
            if kind != "streaming_config":
                raise invalid_argument(
                    "send streaming_config first: the first StreamingRecognizeRequest must carry the "
                    "StreamingRecognitionConfig, and only the messages after it audio_content."
                )
            self._start(request)
        elif kind == "streaming_config":
            raise invalid_argument(
                "streaming_config was already received: send it once, in the first message; "
                "then only audio_content."
            )
        elif kind == "audio_content":
            await self._on_audio(request.audio_content)

    def _start(self, request: riva_asr_pb2.StreamingRecognizeRequest) -> None:
        streaming = request.streaming_config
        options = recognition_options(streaming.config, self._config, self._models.speaker is not None)
        self._options, self._interim = options, streaming.interim_results
        self._audio = RivaAudioIn(options.audio, self._config.transcription.max_file_bytes)
        if request.HasField("id"):
            self._request_id = request.id
        settings = options.live_settings(self._config, partials=streaming.interim_results)
        self.engine = live_engine(
            self._config, self._models, self._vad, settings, self._on_engine_event, self._vad_batcher
        )

    async def _on_audio(self, data: bytes) -> None:
        limit = self._config.limits.max_message_bytes
        if len(data) > limit:
            raise GrpcAbort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"An audio_content of {len(data)} bytes exceeds the maximum of {limit} bytes "
                "(limits.max_message_bytes); send the audio in smaller chunks.",
            )
        assert self._audio is not None and self.engine is not None
        pcm16 = self._audio.feed(data)
        if pcm16:
            await self.engine.append_audio(pcm16)

    async def finish(self) -> None:
        """The client half-closed: the open utterance is finalised, then the call ends.

        Raises:
            GrpcAbort: The stream held no config, its audio ended unusable, or ASR failed.
        """
        if self._options is None:
            raise invalid_argument("send streaming_config first: the stream ended without one.")
        assert self._audio is not None and self.engine is not None
        self._finishing = True
        try:
            # A FLAC/Ogg file is decoded whole only now (FFmpeg: off the event loop).
            await _feed(self.engine, await asyncio.to_thread(self._audio.flush))
            await self.engine.end_of_stream()
        finally:
            self._finishing = False
        self._raise_failure()

    async def close(self) -> None:
        """Stop all work; the call is ending."""
        if self.engine is not None:
            await self.engine.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _send(self, result: riva_asr_pb2.StreamingRecognitionResult | None) -> None:
        if result is None:
            return
        response = riva_asr_pb2.StreamingRecognizeResponse(results=[result])
        if self._request_id is not None:
            response.id.CopyFrom(self._request_id)
        await self._emit(response)

    async def _on_engine_event(self, event: ev.EngineEvent) -> None:
        options, engine = self._options, self.engine
        if options is None or engine is None or self._failure is not None:
            return
        processed_s = engine.stream_ms / 1000
        match event:
            case ev.TranscriptPartial(words=words, stable_words=stable) if words and self._interim:
                await self._send(
                    streaming_result(
                        words, options, final=False, audio_processed_s=processed_s, stable_words=stable
                    )
                )
            case ev.WordsFinal(words=words) if words:
                await self._send(streaming_result(words, options, final=True, audio_processed_s=processed_s))
            case ev.ErrorOccurred(code="transcription_failed", message=message):
                self._failure = _asr_failed(message)


async def recognize(
    config: AppConfig,
    models: ModelClients,
    vad: VADStream,
    request: riva_asr_pb2.RecognizeRequest,
    vad_batcher: VADBatcher | None = None,
) -> riva_asr_pb2.RecognizeResponse:
    """``Recognize``: the whole recording in ``request.audio``, one result per utterance.

    The recording may be at most ``limits.max_input_buffer_s`` long (and a FLAC/Ogg file at
    most ``transcription.max_file_bytes``).

    Args:
        config: The application config.
        models: The model endpoints.
        vad: A fresh VAD stream (it cuts the recording into utterances).
        request: The client's request.
        vad_batcher: Shares VAD model calls with other sessions.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED`` or ``FAILED_PRECONDITION`` for
            the request, ``INTERNAL`` when the ASR model failed.
    """
    options = recognition_options(request.config, config, models.speaker is not None)
    pcm16 = await asyncio.to_thread(
        decode_whole,
        request.audio,
        options.audio,
        config.transcription.max_file_bytes,
        config.limits.max_input_buffer_s,
    )
    results: list[riva_asr_pb2.SpeechRecognitionResult] = []
    failures: list[str] = []

    async def on_event(event: ev.EngineEvent) -> None:
        match event:
            case ev.UtteranceEnded(words=words, audio_end_ms=end_ms):
                result = speech_result(words, options, end_ms / 1000)
                if result is not None:
                    results.append(result)
            case ev.ErrorOccurred(code="transcription_failed", message=message):
                failures.append(message)

    settings = options.live_settings(config, partials=False)
    engine = live_engine(config, models, vad, settings, on_event, vad_batcher)
    try:
        await _feed(engine, pcm16)
        await engine.end_of_stream()
    finally:
        await engine.close()
    if failures:
        raise _asr_failed(failures[0])
    response = riva_asr_pb2.RecognizeResponse(results=results)
    if request.HasField("id"):
        response.id.CopyFrom(request.id)
    return response
