"""The uncommitted input audio of one session, addressed by stream time.

Server VAD reports times in milliseconds since the stream began; this buffer keeps the
audio since its last trim and maps those times to bytes, so the Session can cut out an
utterance (with its prefix padding) without keeping the whole stream in memory.
"""

from __future__ import annotations


class InputBuffer:
    """PCM16 mono audio at ``rate``, starting at stream time ``start_ms``.

    Args:
        rate: Sample rate of the audio appended.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._audio = bytearray()
        self.start_ms = 0.0  # stream time of the first buffered sample
        self.end_ms = 0.0  # stream time just after the last sample received

    def __len__(self) -> int:
        return len(self._audio)

    @property
    def duration_ms(self) -> float:
        """Length of the buffered audio."""
        return len(self._audio) / 2 / self.rate * 1000

    def append(self, pcm16: bytes) -> None:
        """Add audio at the end of the stream."""
        self._audio += pcm16
        self.end_ms += len(pcm16) / 2 / self.rate * 1000

    def all(self) -> bytes:
        """Everything buffered."""
        return bytes(self._audio)

    def slice(self, start_ms: float, end_ms: float) -> bytes:
        """Audio between two stream times (clamped to what is buffered)."""
        return bytes(self._audio[self._offset(start_ms) : self._offset(end_ms)])

    def drop_until(self, stream_ms: float) -> None:
        """Forget audio before ``stream_ms``."""
        cut = self._offset(stream_ms)
        del self._audio[:cut]
        self.start_ms += cut / 2 / self.rate * 1000

    def keep_last(self, keep_ms: float) -> None:
        """Outside speech, keep only what a future speech start's padding may need.

        Trims in steps (when twice ``keep_ms`` is buffered) so it is not a copy per frame.
        """
        if self.duration_ms > 2 * keep_ms:
            self.drop_until(self.end_ms - keep_ms)

    def clear(self) -> None:
        """Forget all audio; stream time goes on (the VAD's time base keeps running)."""
        self._audio.clear()
        self.start_ms = self.end_ms

    def _offset(self, stream_ms: float) -> int:
        """Byte offset of stream time ``stream_ms`` (clamped, sample aligned)."""
        samples = int((stream_ms - self.start_ms) * self.rate / 1000)
        return max(0, min(len(self._audio), samples * 2))
