"""``talk`` and ``voxray talk`` against a scripted fake Realtime server (not voxray's server).

The fake speaks just enough of the OpenAI Realtime protocol to drive one turn: it ends the
user's turn with a crude energy "VAD" after 200 ms of silence and answers with a fixed reply.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from serve_app.client import cli
from serve_app.client.talk import (
    FRAME_BYTES,
    RATE,
    TalkResult,
    TalkServerError,
    TalkTimeout,
    frame_dbfs,
    last_voiced_frame,
    talk,
)
from serve_app.engine.audio.pcm import read_wav

TRANSCRIPT = "what is the capital of france"
REPLY_TEXT = ["Paris ", "is the ", "capital."]
REPLY_AUDIO = [bytes([i]) * 960 for i in (1, 2, 3)]
METADATA = {"total_ms": "900", "asr_ms": "120", "first_audio_ms": "610", "llm_first_token_ms": "300",
            "backend": "fake"}  # fmt: skip
FAKE_SILENCE_MS = 200


def tone(seconds: float, rate: int = RATE, amplitude: float = 0.3, channels: int = 1) -> bytes:
    """A 440 Hz sine as PCM16 (interleaved when ``channels`` > 1)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = np.rint(amplitude * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    return np.repeat(mono, channels).tobytes()


class FakeRealtimeServer:
    """A scripted fake of an OpenAI Realtime server, for testing the client only.

    Args:
        mode: ``reply`` answers each turn; ``error`` sends an ``error`` event on the first
            audio; ``fail`` answers with a failed ``response.done``; ``mute`` never answers.
    """

    def __init__(self, mode: str = "reply") -> None:
        self.mode = mode
        self.audio = bytearray()
        self.session_updates: list[dict[str, Any]] = []
        self._server: Any = None

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    async def _handle(self, ws: ServerConnection) -> None:
        session = {"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": FAKE_SILENCE_MS}}}}  # fmt: skip
        await self._send(ws, "session.created", session=session)
        speaking, quiet_frames = False, 0
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "session.update":
                self.session_updates.append(event["session"])
                await self._send(ws, "session.updated", session=session)
            elif event["type"] == "input_audio_buffer.append":
                frame = base64.b64decode(event["audio"])
                self.audio += frame
                if self.mode == "error":
                    await self._send(ws, "error", error={
                        "type": "invalid_request_error", "code": "bad_audio",
                        "message": "the fake refuses this audio", "event_id": None})  # fmt: skip
                    continue
                loud = frame_dbfs(frame, len(frame))[0] > -30
                if loud and not speaking:
                    speaking = True
                    await self._send(ws, "input_audio_buffer.speech_started", item_id="item_1")
                quiet_frames = 0 if loud else quiet_frames + 1
                if speaking and quiet_frames * 20 >= FAKE_SILENCE_MS:
                    speaking = False
                    if self.mode != "mute":
                        await self._answer(ws)

    async def _answer(self, ws: ServerConnection) -> None:
        await self._send(ws, "input_audio_buffer.speech_stopped", item_id="item_1")
        await self._send(ws, "input_audio_buffer.committed", item_id="item_1")
        await self._send(
            ws,
            "conversation.item.input_audio_transcription.completed",
            item_id="item_1",
            transcript=TRANSCRIPT,
        )
        await self._send(ws, "response.created", response={"id": "resp_1", "status": "in_progress"})
        if self.mode == "fail":
            details = {"type": "failed", "error": {"type": "server_error", "message": "LLM crashed"}}
            await self._send(ws, "response.done", response={"id": "resp_1", "status": "failed",
                                                            "status_details": details})  # fmt: skip
            return
        for text in REPLY_TEXT:
            await self._send(ws, "response.output_audio_transcript.delta", response_id="resp_1", delta=text)
        for chunk in REPLY_AUDIO:
            delta = base64.b64encode(chunk).decode()
            await self._send(
                ws, "response.output_audio.delta", response_id="resp_1", item_id="i", delta=delta
            )
        done = {"id": "resp_1", "status": "completed", "output": [], "metadata": METADATA}
        await self._send(ws, "response.done", response=done)

    @staticmethod
    async def _send(ws: ServerConnection, kind: str, **fields: Any) -> None:
        await ws.send(json.dumps({"type": kind, "event_id": "evt", **fields}))


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    """0.4 s of tone at 16 kHz stereo, no trailing silence: the client must resample and pad."""
    path = tmp_path / "question.wav"
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(tone(0.4, rate=16_000, channels=2))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_last_voiced_frame_finds_the_end_of_a_tone() -> None:
    noise = np.random.default_rng(0).normal(0, 10, RATE).astype("<i2").tobytes()  # about -70 dBFS
    pcm = tone(0.5) + noise
    assert last_voiced_frame(pcm) == 24  # 0.5 s = frames 0..24 of 20 ms
    assert last_voiced_frame(tone(0.5) + bytes(RATE * 2)) == 24
    assert last_voiced_frame(noise) is None
    assert len(tone(0.31)) % FRAME_BYTES  # a partial last frame still counts
    assert last_voiced_frame(tone(0.31)) == 15
    assert frame_dbfs(tone(0.1, amplitude=1.0))[1] == pytest.approx(-3.01, abs=0.1)
    # A threshold above the tone's level (-13.5 dBFS) finds no speech.
    assert last_voiced_frame(tone(0.5), threshold_dbfs=-10) is None


async def test_talk_collects_transcripts_audio_and_timings(question_wav: Path) -> None:
    async with FakeRealtimeServer() as fake:
        result = await talk(question_wav, url=fake.url, fast=True, timeout=20)
    assert result.user_transcript == TRANSCRIPT
    assert result.assistant_text == "".join(REPLY_TEXT)
    assert result.reply_pcm16 == b"".join(REPLY_AUDIO)
    assert result.reply_rate == RATE
    assert result.response_id == "resp_1"
    assert result.response_status == "completed"
    assert result.silence_duration_ms == FAKE_SILENCE_MS
    assert result.input_s == pytest.approx(0.4, abs=0.021)
    assert result.speech_end_s is not None and 0.38 <= result.speech_end_s <= 0.44
    # The file has no trailing silence, so the client had to stream some for the fake's VAD.
    assert result.trailing_silence_s >= FAKE_SILENCE_MS / 1000
    assert len(fake.audio) >= 0.4 * RATE * 2 + FAKE_SILENCE_MS / 1000 * RATE * 2
    assert list(result.server_timings_ms) == ["asr_ms", "llm_first_token_ms", "first_audio_ms", "total_ms"]
    assert result.server_timings_ms["first_audio_ms"] == 610.0
    assert result.server_metadata == METADATA
    client = result.client
    assert None not in (client.voice_response_latency_ms, client.transcript_ms, client.response_done_ms)
    # Events arrive in order, so these hold however slow the machine is.
    assert client.speech_stopped_ms <= client.transcript_ms <= client.response_created_ms  # type: ignore[operator]
    assert client.first_text_ms <= client.voice_response_latency_ms <= client.response_done_ms  # type: ignore[operator]
    kinds = [e.type for e in result.events]
    assert kinds[0] == "session.created" and kinds[-1] == "response.done"
    assert kinds.count("response.output_audio.delta") == len(REPLY_AUDIO)
    assert "reply_pcm16" not in result.model_dump(mode="json")


async def test_talk_sends_session_update(question_wav: Path) -> None:
    async with FakeRealtimeServer() as fake:
        await talk(question_wav, url=fake.url, fast=True, instructions="Be brief.", voice="joe", timeout=20)
    assert fake.session_updates == [
        {"type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "joe"}}}
    ]


async def test_talk_raises_on_failed_response(question_wav: Path) -> None:
    async with FakeRealtimeServer(mode="fail") as fake:
        with pytest.raises(TalkServerError, match="LLM crashed"):
            await talk(question_wav, url=fake.url, fast=True, timeout=20)


async def test_talk_times_out_without_a_reply(question_wav: Path) -> None:
    async with FakeRealtimeServer(mode="mute") as fake:
        with pytest.raises(TalkTimeout, match="no complete reply"):
            await talk(question_wav, url=fake.url, fast=True, timeout=1.0, max_trailing_silence_s=0.3)


async def test_cli_talk_writes_reply_and_reports(
    question_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reply.wav"
    async with FakeRealtimeServer() as fake:
        argv = ["talk", str(question_wav), "--url", fake.url, "--fast", "--out", str(out)]
        code = await asyncio.to_thread(cli.main, argv)
    assert code == 0
    assert read_wav(out) == (b"".join(REPLY_AUDIO), RATE)
    report = capsys.readouterr().out
    assert TRANSCRIPT in report and "Paris is the capital." in report
    assert "voice response latency" in report and "first_audio_ms" in report and "backend" in report


async def test_cli_talk_json(question_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeRealtimeServer() as fake:
        code = await asyncio.to_thread(
            cli.main, ["talk", str(question_wav), "--url", fake.url, "--fast", "--json"]
        )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is True
    assert payload["user_transcript"] == TRANSCRIPT
    assert payload["reply_s"] == pytest.approx(len(b"".join(REPLY_AUDIO)) / 2 / RATE, abs=1e-3)
    assert payload["server_timings_ms"]["total_ms"] == 900.0
    assert payload["client"]["voice_response_latency_ms"] is not None


async def test_cli_talk_exits_1_on_error_event(
    question_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeRealtimeServer(mode="error") as fake:
        code = await asyncio.to_thread(cli.main, ["talk", str(question_wav), "--url", fake.url, "--fast"])
    assert code == 1
    err = capsys.readouterr().err
    assert "the fake refuses this audio" in err and "bad_audio" in err


def test_cli_talk_exits_1_when_no_server(question_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    assert cli.main(["talk", str(question_wav), "--url", url, "--timeout", "10"]) == 1
    err = capsys.readouterr().err
    assert "could not connect" in err and "Is the server running?" in err and "serve run" in err


def test_cli_talk_exits_1_on_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "eight_bit.wav"
    import wave

    with wave.open(str(bad), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(800))
    assert cli.main(["talk", str(bad)]) == 1
    assert "16-bit" in capsys.readouterr().err


def test_cli_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert cli.main(["config", "check", str(repo / "configs" / "local.yaml")]) == 0
    assert capsys.readouterr().out.startswith("OK")
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications:\n  - name: voxray\n    args:\n      asr: {beam_sise: 2}\n")
    assert cli.main(["config", "check", str(bad)]) == 1
    assert "asr.beam_sise" in capsys.readouterr().err


def test_baseline_tables_tolerate_missing_server_keys() -> None:
    from bench.baseline import LATENCY, MINUS_SILENCE, TurnRecord, metrics, question_table, summarize

    full = TalkResult(silence_duration_ms=500, server_timings_ms={"asr_ms": 100.0, "total_ms": 900.0})
    full.client.voice_response_latency_ms = 1200.0
    partial = TalkResult(server_timings_ms={"llm_first_token_ms": 300.0})  # no silence, no latency
    records = [
        TurnRecord(question_index=0, question="q", repeat=1, result=full),
        TurnRecord(question_index=0, question="q", repeat=2, result=partial),
        TurnRecord(question_index=0, question="q", repeat=3, error="timed out"),
    ]
    summary = summarize(metrics(r.result) for r in records if r.result)
    assert summary[LATENCY].n == 1 and summary[LATENCY].p50 == 1200.0
    assert summary[MINUS_SILENCE].p50 == 700.0
    assert summary["server asr_ms"].n == 1 and summary["server llm_first_token_ms"].n == 1
    server_rows = [k for k in summary if k.startswith("server ")]
    assert server_rows == ["server asr_ms", "server llm_first_token_ms", "server total_ms"]
    table = question_table(0, "q", records, summary)
    assert "#3" in table and "timed out" in table and "—" in table
