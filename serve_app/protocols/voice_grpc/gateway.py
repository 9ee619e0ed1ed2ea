"""Seed 002's voice gateway over gRPC: ``voice_workflow.VoiceGateway/StreamAudio``.

Its clients stream a ``VoiceConfig`` (language, sample rate), then PCM16 microphone audio,
and play back what comes: transcripts, the reply's text and its audio, and state events.
This serves them from voxray's engine, so they get server VAD, barge-in and the same models
as the WebSocket protocols, unchanged. What a client sees, in order, for one spoken turn::

    event LISTENING "Ready"           once, answering the config
    transcript_chunk "What is th..."  interim: what was heard so far, at a pause (may repeat)
    event PROCESSING                  the person stopped speaking
    transcript_chunk "What is the capital of France?"   final
    llm_response_chunk "The capital"  each phrase of the reply, just before its audio
    event SPEAKING                    once, before the reply's first audio
    audio_chunk ...                   PCM16 mono at the config's sample_rate (0: 16 kHz)
    event END_OF_TURN                 the reply is done ("interrupted" or "cancelled" if it
    event LISTENING                   was cut short); then back to listening, as the seed says

``text_input`` is a typed turn: it stops the reply in progress, then gets ``PROCESSING``
and a reply like speech. Speaking over a reply stops it at once (barge-in): none of its
audio goes out after the speech is detected. Recoverable mistakes are ``ERROR`` events;
what the stream cannot survive (no config first, a bad config, an oversized message) ends
the call with a status code. A half-close answers the last utterance, then ends the call OK.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import Message

from serve_app.engine import events as ev
from serve_app.engine.settings import VoiceSettings
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.voice_grpc.audio import asr_language, sample_rate
from serve_app.protocols.voice_grpc.session import VoiceStreamSession

logger = logging.getLogger("voxray")

PROTOCOL = "voice_gateway"


def event(kind: int, message: str = "") -> vw.ServerMessage:
    """A ``ServerMessage`` holding a ``ServerEvent``."""
    return vw.ServerMessage(event=vw.ServerEvent(type=kind, message=message))  # type: ignore[arg-type]


class VoiceGatewaySession(VoiceStreamSession):
    """One ``StreamAudio`` call: a ``GrpcSession`` (see the module docstring for the contract).

    Built as :class:`VoiceStreamSession` is; ``emit`` sends ``ServerMessage`` messages.
    """

    protocol = PROTOCOL
    audio_field = "audio_chunk"
    first_message_hint = "a VoiceConfig (ClientMessage.config)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers = {"audio_chunk": self._audio, "text_input": self._text_turn}
        self._speaking: set[str] = set()  # replies whose SPEAKING event went out

    def _settings(self, config: vw.VoiceConfig) -> tuple[VoiceSettings, str]:
        rate = sample_rate(config.sample_rate, "VoiceConfig.sample_rate")
        settings = self._default_settings(rate, rate)  # replies come back at the client's rate
        settings.input_language = asr_language(config.language_code, "VoiceConfig.language_code")
        if config.session_id:
            logger.info("voice_gateway session %s is the client's %r", self.id, config.session_id[:100])
        return settings, "pcm16"

    async def _started(self, settings: VoiceSettings) -> None:
        await self._emit(event(vw.LISTENING, "Ready"))

    async def _turn_taken(self) -> None:
        await self._emit(event(vw.PROCESSING))  # a typed turn: the seed's state before an answer

    def _error_message(self, code: str, message: str) -> Message:
        return event(vw.ERROR, f"{message} ({code})")

    def _render(self, engine_event: ev.EngineEvent) -> list[Message]:
        match engine_event:
            case ev.SpeechStopped():
                return [event(vw.PROCESSING)]
            case ev.TranscriptPartial(text=text) if text.strip():
                return [vw.ServerMessage(transcript_chunk=text.strip())]
            case ev.TranscriptFinal(text=text) if text.strip():
                return [vw.ServerMessage(transcript_chunk=text.strip())]
            case ev.TranscriptFinal() | ev.TranscriptFailed():
                return [event(vw.LISTENING)]  # nothing to answer: listening again
            case ev.ReplyText(text=text) if text.strip():
                return [vw.ServerMessage(llm_response_chunk=text)]
            case ev.ReplyAudio(response_id=rid, pcm16=pcm16):
                return [*self._speaking_once(rid), vw.ServerMessage(audio_chunk=pcm16)]
            case ev.ReplyDone(response_id=rid):
                self._speaking.discard(rid)
                return [event(vw.END_OF_TURN, _ending(engine_event)), event(vw.LISTENING)]
            case ev.ErrorOccurred(code=code, message=message):
                return [self._error_message(code, message)]
        return []

    def _speaking_once(self, response_id: str) -> list[Message]:
        if response_id in self._speaking:
            return []
        self._speaking.add(response_id)
        return [event(vw.SPEAKING)]


def _ending(done: ev.ReplyDone) -> str:
    """END_OF_TURN's message: empty for a reply said in full, else why it stopped."""
    if done.status == "completed":
        return ""
    if done.status == "failed":
        return "failed"
    return "interrupted" if done.reason == "turn_detected" else "cancelled"
