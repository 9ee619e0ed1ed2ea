"""Voice response latency through each wire protocol, on one server, in one run.

The same spoken questions go to ``/v1/realtime`` (OpenAI Realtime, 24 kHz base64 JSON) and
``/v1/flow`` (Speechmatics Flow, 16 kHz binary frames), interleaved turn by turn with the
order alternating, each turn on a fresh connection, streamed in real time in 20 ms frames.
Voice response latency is measured the same way for both: from sending the last voiced frame
(above -45 dBFS) to receiving the first byte of reply audio.

    python -m bench.protocols --base ws://127.0.0.1:8000 --repeats 5 --out bench/results/protocols.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import websockets
from pydantic import BaseModel, Field

from bench.baseline import synthesize_questions
from serve_app.client.talk import FRAME_MS, RATE, last_voiced_frame, talk
from serve_app.engine.audio.pcm import resample_pcm16

FLOW_RATE = 16_000
FLOW_FRAME_BYTES = FLOW_RATE * FRAME_MS // 1000 * 2


class Turn(BaseModel):
    """One measured turn."""

    protocol: str
    question: int
    repeat: int
    voice_response_latency_ms: float | None
    error: str | None = None


class ProtocolReport(BaseModel):
    """Every turn, and the medians per protocol."""

    base_url: str
    questions: list[str]
    turns: list[Turn] = Field(default_factory=list)
    median_ms: dict[str, float] = Field(default_factory=dict)
    flow_minus_realtime_ms: float | None = None


async def send_paced(
    frames: list[bytes],
    send: Callable[[bytes], Awaitable[Any]],
    last_voiced: int | None,
    stop: Callable[[], bool],
) -> float | None:
    """Send ``frames`` in real time (one per ``FRAME_MS``) until ``stop()`` says the reply began.

    Returns:
        When the last voiced frame (index ``last_voiced``) was sent; ``None`` if it was not.
    """
    sent_voiced_at = None
    began = time.perf_counter()
    for index, frame in enumerate(frames):
        if stop():
            break
        await asyncio.sleep(max(0.0, began + index * FRAME_MS / 1000 - time.perf_counter()))
        await send(frame)
        if index == last_voiced:
            sent_voiced_at = time.perf_counter()
    return sent_voiced_at


async def flow_turn(url: str, pcm24k: bytes, api_key: str | None, timeout_s: float = 60.0) -> float:
    """One Flow conversation: stream the question in real time; ms from last voiced frame to first audio."""
    pcm = resample_pcm16(pcm24k, RATE, FLOW_RATE)
    last_voiced = last_voiced_frame(pcm, frame_bytes=FLOW_FRAME_BYTES)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        start = {
            "message": "StartConversation",
            "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": FLOW_RATE},
            "conversation_config": {"template_id": "default"},
        }
        await ws.send(json.dumps(start))
        while json.loads(await ws.recv())["message"] != "ConversationStarted":
            pass
        first_audio: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes) and not first_audio.done():
                    first_audio.set_result(time.perf_counter())

        reader = asyncio.create_task(read())
        frames = [pcm[i : i + FLOW_FRAME_BYTES] for i in range(0, len(pcm), FLOW_FRAME_BYTES)]
        try:
            sent_voiced_at = await send_paced(frames, ws.send, last_voiced, first_audio.done)
            received_at = await asyncio.wait_for(first_audio, timeout_s)
        finally:
            reader.cancel()
    if sent_voiced_at is None:
        raise RuntimeError("no voiced frame was sent before the reply began")
    return (received_at - sent_voiced_at) * 1000


async def realtime_turn(url: str, pcm24k: bytes, api_key: str | None) -> float:
    """One Realtime turn through ``voxray talk``'s client; the same latency figure."""
    result = await talk(pcm24k, url=url, api_key=api_key)
    if result.client.voice_response_latency_ms is None:
        raise RuntimeError("no reply audio")
    return result.client.voice_response_latency_ms


async def interleave(
    turns: dict[str, Callable[[bytes], Awaitable[float]]],
    spoken: list[bytes],
    repeats: int,
    report: ProtocolReport,
) -> None:
    """Each question ``repeats`` times through every protocol, order alternating; medians too.

    Every protocol first takes one unmeasured turn. Each turn (a coroutine taking 24 kHz
    PCM16, returning the voice response latency in ms) goes into ``report.turns``, failed
    ones with their error; ``report.median_ms`` gets each protocol's median.
    """
    for protocol in turns:  # warm-up, unmeasured
        await turns[protocol](spoken[0])
    for repeat in range(repeats):
        for index, pcm in enumerate(spoken):
            order = list(turns) if (repeat + index) % 2 == 0 else list(reversed(turns))
            for protocol in order:
                try:
                    latency, error = await turns[protocol](pcm), None
                except Exception as exc:
                    latency, error = None, f"{type(exc).__name__}: {exc}"
                turn = Turn(
                    protocol=protocol, question=index, repeat=repeat, voice_response_latency_ms=latency
                )
                turn.error = error
                report.turns.append(turn)
                shown = f"{latency:.0f} ms" if latency is not None else error
                print(f"{protocol:8} q{index} r{repeat}: {shown}", file=sys.stderr)
    for protocol in turns:
        values = [t.voice_response_latency_ms for t in report.turns if t.protocol == protocol]
        measured = [v for v in values if v is not None]
        if measured:
            report.median_ms[protocol] = round(statistics.median(measured), 1)


async def run(args: argparse.Namespace) -> ProtocolReport:
    report = ProtocolReport(base_url=args.base, questions=args.questions)
    spoken = await synthesize_questions(args.questions, 0.3, 1.5)
    turns = {
        "realtime": lambda pcm: realtime_turn(f"{args.base}/v1/realtime", pcm, args.api_key),
        "flow": lambda pcm: flow_turn(f"{args.base}/v1/flow", pcm, args.api_key),
    }
    await interleave(turns, spoken, args.repeats, report)
    report.flow_minus_realtime_ms = difference_ms(report.median_ms, "flow", "realtime")
    return report


def difference_ms(median_ms: dict[str, float], first: str, second: str) -> float | None:
    """``first``'s median minus ``second``'s, when both were measured."""
    if first in median_ms and second in median_ms:
        return round(median_ms[first] - median_ms[second], 1)
    return None


def arguments(description: str | None) -> argparse.ArgumentParser:
    """The options of every protocol comparison: server, questions, repeats, key, output."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="ws://127.0.0.1:8000", help="server base URL (no path)")
    parser.add_argument(
        "--questions",
        nargs="+",
        default=["What is the capital of France?", "How many minutes are there in a day?"],
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    return parser


def conclude(report: ProtocolReport, out: Path | None, first: str, second: str) -> int:
    """Print each protocol's median and ``first`` minus ``second``, write the JSON; the exit code."""
    for protocol, median in report.median_ms.items():
        n = sum(t.voice_response_latency_ms is not None for t in report.turns if t.protocol == protocol)
        print(f"{protocol:12} voice response latency p50 {median:.1f} ms (n={n})")
    difference = difference_ms(report.median_ms, first, second)
    if difference is not None:
        print(f"{first} - {second}: {difference:+.1f} ms (p50)")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.model_dump_json(indent=2))
    return 0 if len(report.median_ms) == 2 else 1


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__).parse_args(argv)
    return conclude(asyncio.run(run(args)), args.out, "flow", "realtime")


if __name__ == "__main__":
    sys.exit(main())
