"""Runs the real Speechmatics RT SDK (``speechmatics-rt`` 1.2.1, unmodified) once: a test driver.

The SDK has no command line, so tests run this script with ``.venv-sm-sdk/bin/python`` (see
``tests/speechmatics_clients.py``); it imports only the SDK and the standard library. It calls
``AsyncClient(api_key=..., url=...).transcribe(file, transcription_config=...)`` exactly as a
user would, and prints every message the server sent (but ``AudioAdded``, which it counts) as
one JSON object a line on stdout, then one summary line ``{"sm_sdk_driver": {...}}``.

``transcribe()`` returns normally in cases that are failures for a user: an ``Error`` after
``RecognitionStarted``, and a socket the server closed without ``EndOfTranscript`` (the SDK
only logs both). So the exit status is the driver's verdict: 0 only when ``EndOfTranscript``
came, no ``Error`` came, and every ``AddTranscript`` / ``AddPartialTranscript`` parsed with the
SDK's own ``TranscriptResult.from_message`` (which requires the fields a user's code reads);
1 when ``transcribe()`` raised (the SDK's exception is on stderr); 2 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import IO, Any

from speechmatics.rt import (
    AsyncClient,
    AudioEncoding,
    AudioFormat,
    ServerMessageType,
    TranscriptionConfig,
    TranscriptResult,
)

SUMMARY_KEY = "sm_sdk_driver"


class PacedReader:
    """A raw audio file read at its own pace: a live source (a microphone) for ``transcribe()``.

    ``read(n)`` returns the next ``n`` bytes once they would have been recorded. The SDK calls
    it in an executor thread, so the sleep does not hold up its event loop.

    Args:
        file: The raw audio.
        bytes_per_s: Bytes of audio a second (2 x the rate for pcm_s16le).
    """

    def __init__(self, file: IO[bytes], bytes_per_s: float) -> None:
        self._file = file
        self._bytes_per_s = bytes_per_s
        self._position = 0
        self._started: float | None = None

    def read(self, size: int = -1) -> bytes:
        """The next ``size`` bytes, when their time has come."""
        if self._started is None:
            self._started = time.monotonic()
        data = self._file.read(size)
        self._position += len(data)
        time.sleep(max(0.0, self._started + self._position / self._bytes_per_s - time.monotonic()))
        return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The driver's options.

    Args:
        argv: The arguments, without the program name; None for ``sys.argv``.

    Returns:
        The parsed options.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the RT endpoint, e.g. ws://127.0.0.1:8000/v2/en")
    parser.add_argument("--audio", required=True, help="the file sent: a WAV file, or raw pcm_s16le")
    parser.add_argument("--api-key", default="voxray-sm-test-key", help="sent as Authorization: Bearer")
    parser.add_argument("--language", default="en")
    parser.add_argument("--raw-rate", type=int, default=0, help="the audio is raw pcm_s16le at this rate")
    parser.add_argument("--realtime", action="store_true", help="read raw audio at its own pace")
    parser.add_argument("--chunk-size", type=int, default=4096, help="bytes per binary frame")
    parser.add_argument("--diarization", default="speaker", help='"none" leaves it out')
    parser.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=float, default=120.0, help="transcribe()'s own timeout, s")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """One transcription session; prints the server's messages and the summary line.

    Args:
        args: The driver's options.

    Returns:
        The exit status (see the module docstring).
    """
    summary: dict[str, Any] = {"end_of_transcript": False, "errors": [], "audio_added": 0, "problems": []}

    def on_message(message: dict[str, Any]) -> None:
        kind = message.get("message")
        if kind == ServerMessageType.AUDIO_ADDED:
            summary["audio_added"] += 1
            return
        print(json.dumps(message), flush=True)
        if kind == ServerMessageType.END_OF_TRANSCRIPT:
            summary["end_of_transcript"] = True
        elif kind == ServerMessageType.ERROR:
            summary["errors"].append(message.get("reason"))
        elif kind in (ServerMessageType.ADD_TRANSCRIPT, ServerMessageType.ADD_PARTIAL_TRANSCRIPT):
            try:
                TranscriptResult.from_message(message)
            except (KeyError, TypeError, ValueError) as error:  # a field the SDK needs is missing
                summary["problems"].append(f"{kind} does not parse: {type(error).__name__}: {error}")

    config: dict[str, Any] = {"language": args.language, "enable_partials": args.partials}
    if args.diarization != "none":
        config["diarization"] = args.diarization
    audio_format = None  # the SDK's default: {"type": "file"}, the server reads the WAV header
    if args.raw_rate:
        audio_format = AudioFormat(
            encoding=AudioEncoding.PCM_S16LE, sample_rate=args.raw_rate, chunk_size=args.chunk_size
        )
    elif args.chunk_size != 4096:
        audio_format = AudioFormat(chunk_size=args.chunk_size)

    status = 0
    async with AsyncClient(api_key=args.api_key, url=args.url) as client:
        for kind in ServerMessageType:
            client.on(kind, on_message)
        try:
            with open(args.audio, "rb") as audio:
                source = PacedReader(audio, 2 * args.raw_rate) if args.realtime and args.raw_rate else audio
                await client.transcribe(
                    source,
                    transcription_config=TranscriptionConfig(**config),
                    audio_format=audio_format,
                    timeout=args.timeout,
                )
        except Exception as error:  # the SDK's own failure: report it as a user would see it
            print(f"transcribe() raised {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            summary["problems"].append(f"{type(error).__name__}: {error}")
            status = 1
        summary["request_id"] = client.request_id
        summary["session_id"] = client.session_id
        summary["audio_bytes_sent"] = client.audio_bytes_sent
    if not status and (summary["errors"] or summary["problems"] or not summary["end_of_transcript"]):
        status = 2
    print(json.dumps({SUMMARY_KEY: summary}), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point.

    Args:
        argv: The arguments, without the program name; None for ``sys.argv``.

    Returns:
        The exit status.
    """
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
