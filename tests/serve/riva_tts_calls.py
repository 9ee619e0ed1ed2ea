"""Calls to voxray's Riva synthesis service for the serve-tier tests, with voxray's own stubs.

The fake TTS of ``tests/serve/conftest.py`` speaks a tone at 22.05 kHz, 60 ms per character,
so every reply's length is known in advance (:func:`samples_of`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from serve_app.protocols.grpc_api.proto import riva_audio_pb2, riva_tts_pb2

Enc = riva_audio_pb2.AudioEncoding
Request = riva_tts_pb2.SynthesizeSpeechRequest
Response = riva_tts_pb2.SynthesizeSpeechResponse
ONLINE_PATH = "/nvidia.riva.tts.RivaSpeechSynthesis/SynthesizeOnline"
MS_PER_CHAR = 60.0
TIMEOUT_S = 30.0


def request(text: str = "Hello there.", **fields: Any) -> riva_tts_pb2.SynthesizeSpeechRequest:
    """What the seed gateway sends: en-US, LINEAR_PCM, 16 kHz, the default voice."""
    defaults: dict[str, Any] = {"language_code": "en-US", "encoding": Enc.LINEAR_PCM, "sample_rate_hz": 16000}
    return Request(text=text, **{**defaults, **fields})


def samples_of(text: str, rate: int) -> int:
    """Samples of the fake TTS's audio for ``text`` at ``rate``."""
    return round(len(text) * MS_PER_CHAR / 1000 * rate)


def audio_by_text(replies: list[Any]) -> list[tuple[str, int]]:
    """``(text, bytes of audio)`` per request, split where a reply carries ``meta`` (a new request)."""
    answered: list[tuple[str, int]] = []
    for reply in replies:
        if reply.meta.text:
            answered.append((reply.meta.text, 0))
        answered[-1] = (answered[-1][0], answered[-1][1] + len(reply.audio))
    return answered


class HealthyStream:
    """A bidi stream kept open across bad calls: one text now, one at :meth:`finish`, then half-close.

    Args:
        stub: A ``RivaSpeechSynthesisStub``.
    """

    def __init__(self, stub: Any) -> None:
        self._texts: queue.Queue[str | None] = queue.Queue()
        self._texts.put("Before the bad calls.")
        self.replies: list[Any] = []
        self.error: grpc.RpcError | None = None
        self._call = stub.SynthesizeOnline(self._requests(), timeout=120)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[Any]:
        while (text := self._texts.get()) is not None:
            yield request(text)

    def _read(self) -> None:
        try:
            self.replies.extend(self._call)
        except grpc.RpcError as exc:
            self.error = exc

    def first_answered(self, timeout_s: float = TIMEOUT_S) -> bool:
        """Wait for the first text's audio to start; whether it did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.replies:
            time.sleep(0.05)
        return bool(self.replies)

    def finish(self) -> list[tuple[str, int]]:
        """Send the second text, half-close, and return ``audio_by_text`` of everything received."""
        self._texts.put("After the bad calls.")
        self._texts.put(None)
        self._reader.join(TIMEOUT_S)
        assert self.error is None, self.error
        return audio_by_text(self.replies)
