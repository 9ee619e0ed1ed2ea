"""The assistant's speech as Flow shows it: one ``ResponseStarted`` … ``ResponseCompleted`` per phrase.

The engine sends each phrase's text with its first audio. A phrase's audio goes out in
256-byte-aligned binary frames between its ``ResponseStarted`` and its ``ResponseCompleted``
(or ``ResponseInterrupted`` when the user barged in). Times are seconds since the
conversation started; a phrase ends when its audio has been sent in full.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from serve_app.protocols.flow import messages as fm
from serve_app.protocols.flow.audio import OUTPUT_RATE, FrameWriter


@dataclass
class _Phrase:
    content: str
    start_time: float
    audio_bytes: int = 0


class SpokenPhrases:
    """Frames reply audio and brackets each phrase with its response messages.

    Args:
        send_bytes: Sends one binary frame.
        emit: Sends one JSON message.
        clock: Seconds since the conversation started.
    """

    def __init__(
        self,
        send_bytes: Callable[[bytes], Awaitable[None]],
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._send_bytes = send_bytes
        self._emit = emit
        self._clock = clock
        self._frames = FrameWriter()
        self._open: _Phrase | None = None

    async def phrase(self, text: str) -> None:
        """A new phrase starts (its audio follows)."""
        await self._close(interrupted=False)
        self._open = _Phrase(text.strip(), self._clock())
        await self._emit(fm.response_started(self._open.content, self._open.start_time))

    async def audio(self, pcm16: bytes) -> None:
        """More of the open phrase's audio (PCM16 at 16 kHz)."""
        for frame in self._frames.push(pcm16):
            await self._send(frame)

    async def reply_done(self, interrupted: bool) -> None:
        """The reply ended: close its last phrase, completed or interrupted."""
        await self._close(interrupted)

    async def _send(self, frame: bytes) -> None:
        if self._open is not None:
            self._open.audio_bytes += len(frame)
        await self._send_bytes(frame)

    async def _close(self, interrupted: bool) -> None:
        for frame in self._frames.flush():
            await self._send(frame)
        phrase, self._open = self._open, None
        if phrase is None:
            return
        end_time = phrase.start_time + phrase.audio_bytes / 2 / OUTPUT_RATE
        await self._emit(
            fm.response_ended(phrase.content, phrase.start_time, end_time, interrupted=interrupted)
        )
