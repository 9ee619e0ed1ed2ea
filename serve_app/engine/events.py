"""What the voice engine announces: typed, protocol-neutral events.

The engine (``serve_app.engine.session``) never builds a wire message. It publishes these
events; each protocol adapter (``serve_app.protocols.*``) turns them into its own messages,
and the observability recorder (``serve_app.observability.recorder``) turns them into
metrics and turn logs. Items travel as snapshots, so a consumer never holds engine state.

Times: ``*_ms`` fields named ``audio_*`` are input stream time (milliseconds of audio the
client has sent); ``timings`` are milliseconds after the turn's reference instant (the end
of the user's speech, or the request that started the reply).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from serve_app.engine.conversation import Item

ReplyStatus = Literal["completed", "cancelled", "failed"]
CancelReason = Literal["turn_detected", "client_cancelled"]
ErrorType = Literal["invalid_request_error", "server_error"]


@dataclass(frozen=True)
class SpeechStarted:
    """The VAD heard the user start speaking; ``item_id`` is the user item it will become."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """The VAD decided the user's turn ended."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class InputCommitted:
    """Input audio became a user item (its transcript follows)."""

    item: Item
    previous_item_id: str | None
    audio_start_ms: float
    audio_end_ms: float


@dataclass(frozen=True)
class InputCleared:
    """The uncommitted input audio was dropped on request."""


@dataclass(frozen=True)
class TimedWord:
    """A word of live transcription, in input stream time.

    Attributes:
        text: The word as written; a punctuation mark is a word of its own (``"."``).
        start_ms: Where it starts (ms of input audio since the stream began).
        end_ms: Where it ends.
        confidence: The model's probability for it, 0 to 1.
        speaker: 1-based speaker label from diarization; ``None`` when diarization is off.
    """

    text: str
    start_ms: float
    end_ms: float
    confidence: float = 1.0
    speaker: int | None = None

    @property
    def is_punctuation(self) -> bool:
        """Whether this is a punctuation mark rather than a spoken word."""
        return bool(self.text) and not any(ch.isalnum() for ch in self.text)


@dataclass(frozen=True)
class TranscriptPartial:
    """A provisional transcript of speech still in progress (it may change).

    Attributes:
        words: Live transcription: the words not final yet, with times (empty in a voice turn).
        stable_words: How many leading ``words`` two decodes in a row agreed on: they are
            unlikely to change (OpenAI-style append-only deltas use only these).
    """

    item_id: str
    text: str
    audio_start_ms: float
    audio_end_ms: float
    words: tuple[TimedWord, ...] = ()
    stable_words: int = 0


@dataclass(frozen=True)
class WordsFinal:
    """Live transcription: words of the utterance ``item_id`` that will not change any more.

    Sent as soon as they are settled: when the utterance ends, or earlier for the settled
    start of a long utterance (``max_delay``). ``words`` may be empty (an utterance of noise).
    """

    item_id: str
    words: tuple[TimedWord, ...]
    audio_start_ms: float
    audio_end_ms: float


@dataclass(frozen=True)
class UtteranceEnded:
    """Live transcription: utterance ``item_id`` ended and all its words are final.

    Attributes:
        text: The whole utterance's final text.
        words: All of its words (already sent in ``WordsFinal`` events).
        forced: Ended on the client's request rather than by silence or end of stream.
    """

    item_id: str
    text: str
    words: tuple[TimedWord, ...]
    audio_start_ms: float
    audio_end_ms: float
    forced: bool = False


@dataclass(frozen=True)
class TranscriptFinal:
    """The transcript of a committed user item; ``item`` is the completed item."""

    item: Item
    text: str
    audio_start_ms: float
    audio_end_ms: float


@dataclass(frozen=True)
class TranscriptFailed:
    """ASR failed for a committed user item; ``message`` is safe to show a client."""

    item: Item
    message: str


@dataclass(frozen=True)
class ReplyStarted:
    """A reply began: ``item`` is its empty assistant item; ``audio`` whether it will speak."""

    response_id: str
    item: Item
    audio: bool


@dataclass(frozen=True)
class ReplyText:
    """The next piece of the reply's text (sent with the first audio of that phrase)."""

    response_id: str
    item_id: str
    text: str
    audio: bool


@dataclass(frozen=True)
class ReplyAudio:
    """The next piece of the reply's audio: mono PCM16 at ``sample_rate``."""

    response_id: str
    item_id: str
    pcm16: bytes
    sample_rate: int


@dataclass(frozen=True)
class ReplyDone:
    """The reply ended; ``item`` holds what reached the client.

    Attributes:
        status: ``completed``, ``cancelled`` (``reason`` says by whom) or ``failed``
            (``error`` says why).
        spoken_text: The text whose audio (or text) was sent.
        output_tokens: LLM deltas generated.
        timings: Stage timings in ms (``asr_ms``, ``llm_first_token_ms``, ``first_audio_ms``, ...).
        voice_turn: The reply answered speech the server VAD ended (``endpointing_ms`` is known).
    """

    response_id: str
    item: Item
    audio: bool
    status: ReplyStatus
    reason: str | None
    error: str | None
    spoken_text: str
    output_tokens: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def voice_turn(self) -> bool:
        """Whether this reply answered speech that the server VAD ended."""
        return "endpointing_ms" in self.timings


@dataclass(frozen=True)
class ErrorOccurred:
    """Something failed that the client should hear about; the session goes on."""

    type: ErrorType
    code: str
    message: str


@dataclass(frozen=True)
class StageMeasured:
    """A measurement for the metrics only (adapters ignore it).

    Measurements of speculative work that was never shown still count: the model work was real.
    """

    metric: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


EngineEvent = (
    SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputCleared
    | TranscriptPartial
    | TranscriptFinal
    | TranscriptFailed
    | WordsFinal
    | UtteranceEnded
    | ReplyStarted
    | ReplyText
    | ReplyAudio
    | ReplyDone
    | ErrorOccurred
    | StageMeasured
)
"""Every event the engine publishes."""

EventSink = Callable[[EngineEvent], Awaitable[None]]
"""Receives the engine's events in order (an adapter, a gate, or a fan-out)."""
