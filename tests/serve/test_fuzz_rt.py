"""Hostile input on ``/v2`` (Speechmatics RT) against the real app, beside a healthy session.

Both real RT clients stop on ``Error``, so a bad message ends its session: one ``Error`` with
the documented type and a reason naming what was wrong, then the server closes the socket.
Each case runs on its own connection; meanwhile a healthy session transcribes speech, and it
must get all its words and ``EndOfTranscript``.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets

from serve_app.engine.audio.pcm import resample_pcm16
from tests.conftest import deployed_app

APP = "fuzzrt"
TIMEOUT_S = 60.0
RAW = {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}


def start(audio_format: Any = None, **config: Any) -> dict[str, Any]:
    """A StartRecognition (raw pcm_s16le 16 kHz, English) with ``transcription_config`` changes."""
    return {
        "message": "StartRecognition",
        "audio_format": RAW if audio_format is None else audio_format,
        "transcription_config": {"language": "en", **config},
    }


def wav_header(fmt_tag: int = 1, bits: int = 16) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, 16000, 32000, 2, bits)
    return b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", 16) + fmt + b"data\x00\x00\x00\x00"


@dataclass
class RTCase:
    """Frames sent on a fresh connection, and the ``Error`` type and reason words expected."""

    name: str
    frames: list[Any]
    error: str
    reason: str


CASES = [
    RTCase("audio before start", [b"\x00\x00"], "protocol_error", "before audio"),
    RTCase("text before start", [{"message": "EndOfStream", "last_seq_no": 0}], "protocol_error", "before"),
    RTCase("not json", ["{'message': 1"], "invalid_message", "not valid JSON"),
    RTCase("json array", ["[1, 2]"], "invalid_message", "JSON object"),
    RTCase("deep nesting", ["[" * 100_000], "invalid_message", "not valid JSON"),
    RTCase("unknown message", [{"message": "Dance"}], "invalid_message", "Unknown message type"),
    RTCase(
        "no audio_format",
        [{"message": "StartRecognition", "transcription_config": {}}],
        "invalid_audio_type",
        "audio_format",
    ),
    RTCase(
        "unknown encoding",
        [start({"type": "raw", "encoding": "opus", "sample_rate": 48000})],
        "invalid_audio_type",
        "encoding",
    ),
    RTCase(
        "sample rate 0",
        [start({"type": "raw", "encoding": "pcm_s16le", "sample_rate": 0})],
        "invalid_audio_type",
        "sample_rate",
    ),
    RTCase("max_delay too small", [start(max_delay=0.1)], "invalid_config", "max_delay"),
    RTCase("channel diarization", [start(diarization="channel")], "invalid_config", "multichannel"),
    RTCase(
        "max_speakers 1",
        [start(diarization="speaker", speaker_diarization_config={"max_speakers": 1})],
        "invalid_config",
        "max_speakers",
    ),
    RTCase("started twice", [start(), start()], "protocol_error", "already"),
    RTCase("odd pcm frame", [start(), b"\x00" * 3], "invalid_audio_type", "whole number"),
    RTCase(
        "f32 frame of 6 bytes",
        [start({"type": "raw", "encoding": "pcm_f32le", "sample_rate": 16000}), b"\x00" * 6],
        "invalid_audio_type",
        "whole number",
    ),
    RTCase("huge frame", [start(), b"\x00" * ((1 << 20) + 2)], "protocol_error", "exceeds"),
    RTCase(
        "wav without data",
        [
            start({"type": "file"}),
            b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(64),
            {"message": "EndOfStream", "last_seq_no": 1},
        ],
        "invalid_audio_type",
        "audio data",
    ),
    RTCase(
        "mp3 inside wav",
        [start({"type": "file"}), wav_header(fmt_tag=85)],
        "invalid_audio_type",
        "Unsupported WAV",
    ),
    RTCase(
        "garbage file",
        [start({"type": "file"}), b"\x13\x37" * 500, {"message": "EndOfStream", "last_seq_no": 1}],
        "invalid_audio_type",
        "could not be decoded",
    ),
    RTCase(
        "last_seq_no too high",
        [start(), b"\x00" * 640, {"message": "EndOfStream", "last_seq_no": 9}],
        "protocol_error",
        "arrived",
    ),
    RTCase(
        "multichannel audio",
        [start(), {"message": "AddChannelAudio", "channel": "1", "data": ""}],
        "protocol_error",
        "Multichannel",
    ),
]


@pytest.fixture(scope="module")
def rt_url(serve_instance: str) -> Iterator[str]:
    args = {
        "asr": {"backend": "fake", "options": {"transcripts": ["what is the capital of france"]}},
        "llm": {"backend": "fake"},
        "tts": {"backend": "fake"},
        "speaker": {"backend": "fake"},
        "transcription": {"ending_grace_s": 0.5},
    }
    with deployed_app(APP, args) as prefix:
        yield f"{serve_instance}{prefix}/v2"


async def send(ws: Any, frame: Any) -> None:
    await ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)


async def receive_all(ws: Any) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    messages: list[dict[str, Any]] = []

    async def read() -> None:
        async for raw in ws:
            messages.append(json.loads(raw))

    await asyncio.wait_for(read(), TIMEOUT_S)
    return messages


async def run_case(url: str, case: RTCase) -> None:
    async with websockets.connect(url, max_size=None, open_timeout=TIMEOUT_S) as ws:
        for frame in case.frames:
            await send(ws, frame)
        got = await receive_all(ws)
    errors = [m for m in got if m["message"] == "Error"]
    assert len(errors) == 1, [m["message"] for m in got]
    assert errors[0]["type"] == case.error and case.reason in errors[0]["reason"], errors[0]
    assert got[-1]["message"] == "Error", [m["message"] for m in got]  # nothing after the Error


async def healthy_session(url: str, utterance: bytes) -> list[dict[str, Any]]:
    """A WAV file of speech, sent in pieces as the clients do; every message until the close."""
    pcm = resample_pcm16(utterance, 24_000, 16_000)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm)
    data = out.getvalue()
    async with websockets.connect(f"{url}/en", max_size=None, open_timeout=TIMEOUT_S) as ws:
        await send(ws, start({"type": "file"}, diarization="speaker", enable_partials=True))
        frames = 0
        for offset in range(0, len(data), 4096):
            await ws.send(data[offset : offset + 4096])
            frames += 1
        await send(ws, {"message": "EndOfStream", "last_seq_no": frames})
        messages = await receive_all(ws)
    assert [m["message"] for m in messages].count("AudioAdded") == frames
    return messages


async def test_hostile_rt_input_ends_only_its_own_session(
    rt_url: str, make_utterance: Callable[..., bytes]
) -> None:
    utterance = make_utterance("What is the capital of France?", lead_silence_s=0.3, trail_silence_s=1.0)
    healthy = asyncio.create_task(healthy_session(rt_url, utterance))
    failures: dict[str, str] = {}
    for case in CASES:
        try:
            await run_case(rt_url, case)
        except Exception as exc:
            failures[case.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    assert failures == {}
    messages = await healthy
    kinds = [m["message"] for m in messages]
    assert kinds[0] == "RecognitionStarted" and kinds[-1] == "EndOfTranscript" and "Error" not in kinds
    words = [r["alternatives"][0] for m in messages if m["message"] == "AddTranscript" for r in m["results"]]
    assert " ".join(w["content"] for w in words) == "what is the capital of france"
    assert {w["speaker"] for w in words} == {"S1"}
