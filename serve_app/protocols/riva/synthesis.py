"""NVIDIA Riva speech synthesis (``nvidia.riva.tts.RivaSpeechSynthesis``) on voxray's TTS deployment.

- ``Synthesize`` (:func:`synthesize`): one request, the whole audio in one response.
- ``SynthesizeOnline`` (:class:`RivaStreamingSynthesis`): audio streamed as the TTS makes it.
  Since client 2.25 the RPC is bidirectional (one request per text, answered in order); a
  2.24 client calls the same method as server-streaming, which on the wire is a stream of
  one request and a half-close, so one stream-stream handler serves both.
- ``GetRivaSynthesisConfig``: :func:`serve_app.protocols.riva.tts_voices.synthesis_config`.

Audio is raw samples without a header in the request's encoding (LINEAR_PCM, MULAW, ALAW)
and rate (0: the voice's own), as Riva sends it (``audio_out``). Input Riva has and voxray
has not (zero-shot voice prompts, custom pronunciation dictionaries) is refused only when a
request actually uses it, so a client that sends the empty defaults is served.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from deployments.types import TTSBackend
from serve_app.config import AppConfig
from serve_app.engine.model_clients import ModelClients, ModelReplicaError, client_error_text
from serve_app.engine.text import clean_for_speech
from serve_app.observability import metrics
from serve_app.observability.metrics import StageLabels
from serve_app.protocols.grpc_api.proto import riva_tts_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument
from serve_app.protocols.riva.audio_out import AudioEncoder, output_encoding, output_rate
from serve_app.protocols.riva.tts_voices import RivaVoice, pick_voice

logger = logging.getLogger("voxray")

PROTOCOL = "riva_tts"
MAX_UNARY_AUDIO_BYTES = 64 << 20
"""Largest ``Synthesize`` reply: what Riva's own CLIs accept by default (``--max-message-length``).
Longer speech is for ``SynthesizeOnline``, which streams it in pieces."""

FIRST_AUDIO_KEPT = 100  # of a stream's requests, for its first-audio times

Emit = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class SynthesisPlan:
    """One checked request: what to say, in which voice, encoding and rate.

    Attributes:
        text: The text as the client sent it.
        speech: What the TTS reads (``meta.processed_text``): SSML tags and markdown removed;
            empty when nothing speakable is left.
        voice: The voice.
        encoding: The output ``AudioEncoding``.
        rate: The output rate, ``None`` for the voice's own.
        request_id: The request's ``id``, echoed on every response.
    """

    text: str
    speech: str
    voice: RivaVoice
    encoding: int
    rate: int | None
    request_id: str = ""

    def response(self, audio: bytes, meta: bool) -> riva_tts_pb2.SynthesizeSpeechResponse:
        """A response carrying ``audio``, with ``meta`` (text and processed text) when asked."""
        response = riva_tts_pb2.SynthesizeSpeechResponse(audio=audio)
        if meta:
            response.meta.text = self.text
            response.meta.processed_text = self.speech
        if self.request_id:
            response.id.value = self.request_id
        return response


def speakable_text(text: str) -> str:
    """What the TTS should read of ``text``: SSML's text without its tags, markdown cleaned away.

    Riva takes SSML as a whole ``<speak>`` document; voxray's TTS has no prosody or phoneme
    controls, so it reads the document's text instead of speaking the tags.
    """
    stripped = text.strip()
    # No "<!": a DOCTYPE could declare entities that expand a short text into megabytes.
    if stripped.startswith("<speak") and "<!" not in stripped:
        with contextlib.suppress(ElementTree.ParseError):
            root = ElementTree.fromstring(stripped)
            if root.tag == "speak":
                stripped = " ".join("".join(root.itertext()).split())
    return clean_for_speech(stripped)


def plan_synthesis(request: riva_tts_pb2.SynthesizeSpeechRequest, config: AppConfig) -> SynthesisPlan:
    """Check one request and decide how to answer it.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` naming the field and what to send instead.
    """
    if request.zero_shot_data.ByteSize():
        raise invalid_argument(
            "zero_shot_data is not supported: voxray has no zero-shot voice cloning; leave it unset."
        )
    if request.custom_dictionary:
        raise invalid_argument(
            "custom_dictionary is not supported: voxray's voices take no pronunciation dictionary; "
            "leave it empty."
        )
    if not request.text.strip():
        raise invalid_argument("text is empty; send the text to synthesize.")
    limit = config.limits.max_text_chars
    if len(request.text) > limit:
        raise invalid_argument(
            f"text has {len(request.text)} characters; this server synthesizes at most {limit} per "
            "request (limits.max_text_chars): split it into several requests."
        )
    encoding = output_encoding(request.encoding)
    rate = output_rate(request.sample_rate_hz)
    voice = pick_voice(config, request.voice_name, request.language_code)
    return SynthesisPlan(
        text=request.text,
        speech=speakable_text(request.text),
        voice=voice,
        encoding=encoding,
        rate=rate,
        request_id=request.id.value,
    )


async def synthesized_audio(plan: SynthesisPlan, tts: TTSBackend) -> AsyncIterator[bytes]:
    """The plan's audio, encoded, as the TTS streams it; closing this stops the TTS.

    Raises:
        GrpcAbort: ``UNAVAILABLE`` when the TTS replica died (retry), ``INTERNAL`` when the
            model failed.
    """
    if not plan.speech:
        return
    encoder = AudioEncoder(plan.encoding, plan.rate)
    try:
        async with contextlib.aclosing(tts.synthesize(plan.speech, plan.voice.name)) as chunks:
            async for chunk in chunks:
                audio = encoder.feed(chunk.pcm16, chunk.sample_rate)
                if audio:
                    yield audio
    except ModelReplicaError as exc:
        raise GrpcAbort(
            grpc.StatusCode.UNAVAILABLE, f"Speech synthesis is unavailable: {exc}; retry."
        ) from exc
    except Exception as exc:
        logger.exception("riva_tts synthesis failed")
        raise GrpcAbort(
            grpc.StatusCode.INTERNAL, f"Speech synthesis failed: {client_error_text(exc)}"
        ) from exc
    tail = encoder.flush()
    if tail:
        yield tail


def _record_first_audio(config: AppConfig, seconds: float) -> None:
    # The same histogram as voice turns' TTS stage: one dashboard for every TTS caller.
    labels = StageLabels.of("TTS", config.tts).tags()
    metrics.record("voxray_tts_time_to_first_chunk_seconds", seconds, **labels)


async def synthesize(
    request: riva_tts_pb2.SynthesizeSpeechRequest, config: AppConfig, models: ModelClients
) -> riva_tts_pb2.SynthesizeSpeechResponse:
    """``Synthesize``: the whole audio of one request in one response.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for a bad request, ``RESOURCE_EXHAUSTED`` when the
            audio outgrows one message (:data:`MAX_UNARY_AUDIO_BYTES`), or a TTS failure.
    """
    plan = plan_synthesis(request, config)
    parts: list[bytes] = []
    size = 0
    started = time.perf_counter()
    async with contextlib.aclosing(synthesized_audio(plan, models.tts)) as stream:
        async for audio in stream:
            if not parts:
                _record_first_audio(config, time.perf_counter() - started)
            size += len(audio)
            if size > MAX_UNARY_AUDIO_BYTES:
                raise GrpcAbort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"The audio outgrows one {MAX_UNARY_AUDIO_BYTES >> 20} MiB response; use "
                    "SynthesizeOnline (talk.py --stream), or a shorter text or lower sample rate.",
                )
            parts.append(audio)
    return plan.response(b"".join(parts), meta=True)


class RivaStreamingSynthesis:
    """``SynthesizeOnline``: each request's audio streamed as the TTS makes it, requests in order.

    Run by a :class:`~serve_app.protocols.grpc_api.stream.GrpcStream`. Each request is
    synthesized inside :meth:`handle_request`, so the next one is read only when this one's
    audio is out: answers keep the requests' order, and a client that sends faster than
    speech is made waits in gRPC's flow control rather than in server memory. When the stream
    ends early (cancelled, a limit, a drain) the stream cancels that call, which closes the
    TTS stream and so stops the work in the TTS replica.

    The first response of each request carries ``meta`` (its text and processed text); a
    request with nothing speakable (only emoji, say) is answered by that response alone.

    Args:
        config: The app config.
        models: The model deployments (only ``tts`` is used).
        emit: Sends one response to the client (waits while the client is behind).

    Attributes:
        first_audio_s: Time to the first audio of the latest requests that had any (logs, tests).
    """

    protocol = PROTOCOL

    def __init__(self, config: AppConfig, models: ModelClients, emit: Emit) -> None:
        self.id = f"{PROTOCOL}_{secrets.token_hex(10)}"
        self._config = config
        self._models = models
        self._emit = emit
        self._busy = False
        self.first_audio_s: deque[float] = deque(maxlen=FIRST_AUDIO_KEPT)

    @property
    def responding(self) -> bool:
        """Whether a request is being synthesized (the stream is not idle meanwhile)."""
        return self._busy

    async def handle_request(self, request: riva_tts_pb2.SynthesizeSpeechRequest) -> None:
        """Synthesize one request and stream its audio; returns when all of it is queued.

        Raises:
            GrpcAbort: The request is invalid, or the TTS failed; the stream ends with it.
        """
        plan = plan_synthesis(request, self._config)
        self._busy = True
        started = time.perf_counter()
        first = True
        try:
            async with contextlib.aclosing(synthesized_audio(plan, self._models.tts)) as stream:
                async for audio in stream:
                    if first:
                        waited = time.perf_counter() - started
                        self.first_audio_s.append(waited)
                        _record_first_audio(self._config, waited)
                        logger.debug("%s %s: first audio after %.0f ms", PROTOCOL, self.id, waited * 1000)
                    await self._emit(plan.response(audio, meta=first))
                    first = False
            if first:
                await self._emit(plan.response(b"", meta=True))
        finally:
            self._busy = False

    async def finish(self) -> None:
        """The client half-closed: every request it sent has been answered already."""

    async def close(self) -> None:
        """Nothing to cancel: a synthesis in flight belongs to the call the stream cancels."""
