"""What a live transcription session asked for, the server's policy, and an utterance's state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from serve_app.engine.events import TimedWord


@dataclass
class LiveSettings:
    """What one transcription session asked for (validated by its protocol adapter).

    Attributes:
        input_rate: Sample rate of the PCM16 given to ``append_audio``.
        language: ISO code; ``None`` detects it.
        partials: Publish ``TranscriptPartial`` events.
        max_delay_ms: Words of a long utterance are settled this long after they were spoken.
        diarization: Label each final word with its speaker.
        max_speakers: At most this many distinct speakers (``None``: no limit).
        silence_ms: Silence that ends an utterance, when the client chose it (Speechmatics'
            ``end_of_utterance_silence_trigger``); ``None`` takes the server's policy.
        manual_commit: No server VAD: an utterance starts with the first audio after the
            last one ended and ends only on ``force_end_of_utterance`` (OpenAI's
            ``turn_detection: null``).
    """

    input_rate: int
    language: str | None = None
    partials: bool = True
    max_delay_ms: float = 4000.0
    diarization: bool = False
    max_speakers: int | None = None
    silence_ms: int | None = None
    manual_commit: bool = False


@dataclass(frozen=True)
class LivePolicy:
    """Server-side tuning of the streaming policy (the ``transcription`` config block)."""

    partial_step_ms: float = 300.0
    silence_ms: int = 400
    pause_ms: int = 150
    settle_pause_ms: float = 250.0
    early_finals: bool = True
    max_window_ms: float = 10_000.0
    prefix_padding_ms: int = 200
    threshold: float = 0.5


@dataclass
class Utterance:
    """One utterance of a live session, as the streaming policy tracks it."""

    item_id: str
    start_ms: float
    window_ms: float  # decodes start here
    settled_ms: float = 0.0  # words ending before this are final
    cuts: list[float] = field(default_factory=list)  # settled pauses: where a window may start
    end_ms: float | None = None
    forced: bool = False
    final: list[TimedWord] = field(default_factory=list)
    draft: list[TimedWord] = field(default_factory=list)
    draft_head_ms: float = 0.0
    speculation: asyncio.Task[list[TimedWord] | None] | None = None
    speculation_end_ms: float = 0.0
    speech_end_ms: float = 0.0  # where the VAD's last pause began
    paused: bool = False  # in a pause since speech_end_ms (the VAD's hint), not resumed
    inflight: asyncio.Future[list[TimedWord] | None] | None = None  # the draft being decoded
    inflight_head_ms: float = 0.0  # how far its audio reaches
    # A speculative final that speech resumed after a clear pause: its words before the pause
    # are final (with the pause's middle), published by the worker.
    pause_final: tuple[asyncio.Task[list[TimedWord] | None], float] | None = None
