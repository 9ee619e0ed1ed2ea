"""voxray's own voice stream over gRPC: ``voxray.voice.v1.VoxrayVoice/Converse``.

The contract is ``serve_app/protocols/grpc_api/proto/voxray_voice.proto``. The client sends
a ``SessionConfig`` first (rates and encodings both ways, voice, instructions, language,
and ``manual_turns``), then audio, typed turns, ``Commit`` and ``Cancel``; the server answers
``SessionStarted``, then the engine's events as they happen::

    SpeechStarted / SpeechStopped     server VAD (not with manual_turns)
    Transcript                        partials (is_final false) at pauses, then the final one
    ResponseText, ResponseAudio       each phrase's text, then its audio (output encoding/rate)
    ResponseDone                      COMPLETED, INTERRUPTED (spoken over), CANCELLED, FAILED
    Error                             a mistake or failure the stream survives

``Commit`` ends the person's turn and asks for the answer now: with ``manual_turns`` it
makes the audio sent since the last commit a user turn (at least 100 ms); with server VAD
it ends the speech in progress as if its silence had been heard. A reply in progress is
superseded by a commit or a text turn (``CANCELLED``), and ``Cancel`` stops it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from serve_app.engine import events as ev
from serve_app.engine.errors import RequestRefused
from serve_app.engine.settings import VoiceSettings
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2 as vv
from serve_app.protocols.grpc_api.status import invalid_argument
from serve_app.protocols.voice_grpc.audio import Encoding, asr_language, encode, sample_rate
from serve_app.protocols.voice_grpc.session import VoiceStreamSession

PROTOCOL = "voxray_voice"

_ENCODINGS: dict[int, Encoding] = {vv.LINEAR_PCM: "pcm16", vv.MULAW: "mulaw", vv.ALAW: "alaw"}
_WIRE: dict[Encoding, int] = {name: value for value, name in _ENCODINGS.items()}
Done = vv.ResponseDone


def _encoding(value: int, field: str, default: Encoding) -> Encoding:
    """The encoding an ``AudioEncoding`` names (unspecified: ``default``).

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for a value this server does not know.
    """
    if value == vv.AUDIO_ENCODING_UNSPECIFIED:
        return default
    if value not in _ENCODINGS:
        raise invalid_argument(f"{field} {value} is not an AudioEncoding: send LINEAR_PCM, MULAW or ALAW.")
    return _ENCODINGS[value]


def done_status(done: ev.ReplyDone) -> int:
    """The ``ResponseDone.Status`` of how a reply ended."""
    if done.status == "completed":
        return Done.COMPLETED
    if done.status == "failed":
        return Done.FAILED
    return Done.INTERRUPTED if done.reason == "turn_detected" else Done.CANCELLED


class ConverseSession(VoiceStreamSession):
    """One ``Converse`` call: a ``GrpcSession`` (see the module docstring for the contract).

    Built as :class:`VoiceStreamSession` is; ``emit`` sends ``ConverseResponse`` messages.
    """

    protocol = PROTOCOL
    audio_field = "response_audio"
    first_message_hint = "a SessionConfig (ConverseRequest.config)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers = {
            "audio": self._audio,
            "text": self._text_turn,
            "commit": self._on_commit,
            "cancel": self._on_cancel,
        }
        self._output: Encoding = "pcm16"
        self._manual = False

    def _settings(self, config: vv.SessionConfig) -> tuple[VoiceSettings, Encoding]:
        input_rate = sample_rate(config.sample_rate_hz, "SessionConfig.sample_rate_hz")
        output_rate = sample_rate(
            config.output_sample_rate_hz, "SessionConfig.output_sample_rate_hz", default=input_rate
        )
        encoding = _encoding(config.encoding, "SessionConfig.encoding", "pcm16")
        self._output = _encoding(config.output_encoding, "SessionConfig.output_encoding", encoding)
        self._check_text(config.instructions, "SessionConfig.instructions")
        if len(config.voice) > 200:
            raise invalid_argument(f"SessionConfig.voice has {len(config.voice)} characters; at most 200.")
        settings = self._default_settings(input_rate, output_rate)
        settings.instructions = config.instructions or settings.instructions
        settings.voice = config.voice or settings.voice
        settings.input_language = asr_language(config.language_code, "SessionConfig.language_code")
        self._manual = config.manual_turns
        if config.manual_turns:
            settings.turn_detection = None  # the client ends turns (Commit)
        return settings, encoding

    async def _started(self, settings: VoiceSettings) -> None:
        started = vv.SessionStarted(
            session_id=self.id,
            input_sample_rate_hz=settings.input_rate,
            output_sample_rate_hz=settings.output_rate,
            voice=settings.voice,
            input_encoding=_WIRE[self._input.encoding],  # type: ignore[arg-type]
            output_encoding=_WIRE[self._output],  # type: ignore[arg-type]
        )
        await self._emit(vv.ConverseResponse(session_started=started))

    # -- requests ----------------------------------------------------------------------------

    async def _on_commit(self, _: vv.Commit) -> None:
        assert self.engine is not None
        if not self._manual:
            if not self._person_speaking():
                await self._client_error(
                    "input_audio_buffer_commit_empty",
                    "No speech is in progress to commit; with server turn detection turns end by "
                    "themselves (set manual_turns to end them with Commit).",
                )
                return
            await self.engine.end_of_input()
            return
        try:
            await self.engine.commit_input()
        except RequestRefused as refused:
            await self._client_error(refused.code, refused.message)
            return
        await self._stop_reply("client_cancelled")  # the person's new turn supersedes it
        await self._reply_now()

    async def _on_cancel(self, _: vv.Cancel) -> None:
        if not await self._stop_reply("client_cancelled"):
            await self._client_error("response_cancel_not_active", "No reply is in progress to cancel.")

    # -- responses ---------------------------------------------------------------------------

    def _error_message(self, code: str, message: str) -> Message:
        return vv.ConverseResponse(error=vv.Error(code=code, message=message))

    def _render(self, event: ev.EngineEvent) -> list[Message]:
        reply: Message
        match event:
            case ev.SpeechStarted(item_id=item_id, audio_start_ms=start_ms):
                reply = vv.ConverseResponse(
                    speech_started=vv.SpeechStarted(audio_start_ms=start_ms, item_id=item_id)
                )
            case ev.SpeechStopped(item_id=item_id, audio_end_ms=end_ms):
                reply = vv.ConverseResponse(
                    speech_stopped=vv.SpeechStopped(audio_end_ms=end_ms, item_id=item_id)
                )
            case ev.TranscriptPartial(item_id=item_id, text=text):
                reply = vv.ConverseResponse(transcript=vv.Transcript(item_id=item_id, text=text))
            case ev.TranscriptFinal(item=item, text=text):
                reply = vv.ConverseResponse(
                    transcript=vv.Transcript(item_id=item.id, text=text, is_final=True)
                )
            case ev.ReplyText(response_id=rid, text=text):
                reply = vv.ConverseResponse(response_text=vv.ResponseText(response_id=rid, delta=text))
            case ev.ReplyAudio(response_id=rid, pcm16=pcm16):
                audio = vv.ResponseAudio(response_id=rid, audio=encode(pcm16, self._output))
                reply = vv.ConverseResponse(response_audio=audio)
            case ev.ReplyDone(response_id=rid, spoken_text=text):
                done = vv.ResponseDone(response_id=rid, status=done_status(event), text=text)  # type: ignore[arg-type]
                reply = vv.ConverseResponse(response_done=done)
            case ev.ErrorOccurred(code=code, message=message):
                reply = self._error_message(code, message)
            case _:
                return []
        return [reply]
