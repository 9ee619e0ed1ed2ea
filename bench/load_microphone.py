"""The sending side of a load-benchmark user: pre-encoded utterances and a 20 ms microphone.

An :class:`Utterance` is a phrase cut into 20 ms ``input_audio_buffer.append`` messages up front;
a :class:`Microphone` sends one frame every 20 ms on a fixed schedule, queued speech else
silence, and marks when an utterance's first and last voiced frames went out. They are apart
from :mod:`bench.load_client` (a session's turns, receiver and measurements) because the send
schedule is independent of what the server answers; ``bench.load_client`` re-exports
:class:`Utterance`, which ``bench.load``, ``bench.soak`` and the tests import from there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from websockets.asyncio.client import ClientConnection

from serve_app.client.talk import FRAME_BYTES, FRAME_MS, VOICED_DBFS, frame_dbfs, last_voiced_frame
from serve_app.engine.audio.pcm import b64encode_audio

FRAME_S = FRAME_MS / 1000


@dataclass(frozen=True)
class Utterance:
    """One spoken phrase, pre-encoded as ``input_audio_buffer.append`` messages (one per frame).

    Encoding once up front keeps JSON and base64 work off the client's hot path, so many
    sessions can stream from one process.
    """

    text: str
    messages: tuple[str, ...]
    first_voiced: int
    last_voiced: int

    @classmethod
    def from_pcm(cls, text: str, pcm16: bytes, threshold_dbfs: float = VOICED_DBFS) -> Utterance:
        """Cut 24 kHz mono PCM16 into 20 ms frames and find its first and last voiced frame."""
        frames = [
            pcm16[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm16), FRAME_BYTES)
        ]
        last = last_voiced_frame(pcm16, threshold_dbfs)
        if last is None:
            raise ValueError(f"no frame of {text!r} is louder than {threshold_dbfs:g} dBFS")
        first = int(np.flatnonzero(frame_dbfs(pcm16) > threshold_dbfs)[0])
        messages = tuple(
            json.dumps({"type": "input_audio_buffer.append", "audio": b64encode_audio(f)}) for f in frames
        )
        return cls(text, messages, first, last)


SILENCE = json.dumps({"type": "input_audio_buffer.append", "audio": b64encode_audio(bytes(FRAME_BYTES))})
Mark = Callable[[float], None]


class Microphone:
    """Sends one frame every 20 ms on a fixed schedule: queued speech, else silence.

    Attributes:
        max_lag_s: Worst lateness of a frame against its schedule; large values mean the client
            process itself could not keep up.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._queue: deque[tuple[str, tuple[Mark, ...]]] = deque()
        self.max_lag_s = 0.0
        self.sent = 0  # frames sent: the server's audio clock, since every frame is 20 ms

    @property
    def audio_ms(self) -> float:
        """Audio time at the end of the frames sent so far (the server's stream time)."""
        return self.sent * FRAME_S * 1000

    def say(
        self, utterance: Utterance, on_first_voiced: Mark | None = None, on_last_voiced: Mark | None = None
    ) -> None:
        """Queue an utterance; the callbacks get the send time of its first and last voiced frame."""
        for i, message in enumerate(utterance.messages):
            marks: tuple[Mark, ...] = ()
            if i == utterance.first_voiced and on_first_voiced is not None:
                marks += (on_first_voiced,)
            if i == utterance.last_voiced and on_last_voiced is not None:
                marks += (on_last_voiced,)
            self._queue.append((message, marks))

    async def run(self) -> None:
        """Stream until cancelled."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            delay = start + self.sent * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # behind schedule: catch up, as a real client's buffered microphone would
                self.max_lag_s = max(self.max_lag_s, -delay)
                await asyncio.sleep(0)
            message, marks = self._queue.popleft() if self._queue else (SILENCE, ())
            await self._ws.send(message)
            now = time.perf_counter()
            self.sent += 1
            for mark in marks:
                mark(now)
