"""What one ``talk`` turn produces and how it fails: the result models and the error classes.

They are apart from :mod:`serve_app.client.talk` (the connection, the sender and the receiver) because
they are plain data with no sockets or clocks: the part of a turn that callers keep, report and
test (``voxray talk``'s report, ``bench.baseline``'s tables). ``serve_app.client.talk`` re-exports every
name here, so ``from serve_app.client.talk import TalkResult`` keeps working.

``RATE`` lives here because :class:`TalkResult` needs it as the default reply rate; it is the
Realtime API's PCM16 rate, which ``talk`` also streams at.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

RATE = 24_000  # the Realtime API's PCM16 rate, both directions


class TalkError(RuntimeError):
    """The turn could not be completed."""


class TalkConnectionError(TalkError):
    """The server could not be reached, or closed the connection mid-turn."""


class TalkTimeout(TalkError):
    """No complete reply arrived within the time limit."""


class ServerError(BaseModel):
    """The ``error`` object of a Realtime ``error`` event (or of a failed response)."""

    type: str = "error"
    code: str | None = None
    message: str = ""
    event_id: str | None = None
    param: str | None = None


class TalkServerError(TalkError):
    """The server sent an ``error`` event, or the response ended with status ``failed``.

    Attributes:
        error: The server's error object.
    """

    def __init__(self, error: ServerError) -> None:
        self.error = error
        code = f" [{error.code}]" if error.code else ""
        super().__init__(f"server error ({error.type}){code}: {error.message}")


class ReceivedEvent(BaseModel):
    """One server event, stamped relative to the send time of the last voiced frame."""

    type: str
    t_ms: float = Field(description="Receive time minus last-voiced-frame send time; negative = before.")


class ClientTimings(BaseModel):
    """Client-side timings in ms, all measured from the send time of the last voiced frame.

    ``None`` means the event never came.
    """

    voice_response_latency_ms: float | None = Field(
        default=None, description="First byte of reply audio received."
    )
    speech_stopped_ms: float | None = Field(default=None, description="input_audio_buffer.speech_stopped.")
    transcript_ms: float | None = Field(
        default=None, description="Latest input_audio_transcription.completed before response.done."
    )
    response_created_ms: float | None = None
    first_text_ms: float | None = Field(default=None, description="First assistant transcript delta.")
    response_done_ms: float | None = None


class TalkResult(BaseModel):
    """Everything one turn produced: transcripts, reply audio, client and server timings."""

    user_transcript: str = Field(default="", description="Transcripts of all committed items, in order.")
    assistant_text: str = ""
    reply_pcm16: bytes = Field(default=b"", exclude=True, repr=False, description="Mono, at reply_rate.")
    reply_rate: int = RATE
    response_id: str | None = None
    response_status: str | None = Field(default=None, description="Of the response that ended the turn.")
    input_s: float = Field(default=0.0, description="Length of the recording sent.")
    speech_end_s: float | None = Field(
        default=None,
        description="End of the last voiced frame in the recording; None when no frame was loud "
        "enough, in which case timings are measured from the end of the recording.",
    )
    trailing_silence_s: float = Field(default=0.0, description="Silence streamed after the recording.")
    silence_duration_ms: int | None = Field(default=None, description="Server VAD endpointing silence.")
    client: ClientTimings = Field(default_factory=ClientTimings)
    server_timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Numeric entries of response.metadata, in time order."
    )
    server_metadata: dict[str, str] = Field(default_factory=dict, description="response.metadata as sent.")
    events: list[ReceivedEvent] = Field(default_factory=list, description="Every server event received.")

    @property
    def reply_s(self) -> float:
        """Length of the reply audio in seconds."""
        return len(self.reply_pcm16) / 2 / self.reply_rate
