"""Live-transcription benchmark: synthetic dialogues streamed in real time to ``/v2``.

    python -m bench.transcription                       # starts configs/local.yaml itself
    python -m bench.transcription --base ws://127.0.0.1:8000 --limit 4 --capacity 1,2

Each dialogue of the test set (``bench.dialogues``: 2- and 3-speaker conversations with known
words, word times and speakers) is streamed to the Speechmatics real-time endpoint as a
microphone would deliver it: ``--frame-ms`` binary frames, each sent once its audio has been
"spoken" by the wall clock, with partials and speaker diarization on. Every server message is
recorded with its arrival time and scored (``bench.transcription_score``): partial and final
latency, WER of the finals, speaker accuracy, DER. Then the capacity sweep streams 1, 2, 3 …
dialogues at once until a level no longer keeps up. Writes ``bench/results/transcription.json``
and ``bench/figures/transcription.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import websockets
import yaml
from pydantic import BaseModel, Field

from bench.dialogues import Dialogue, build_test_set, default_data_dir
from bench.transcription_report import (
    CapacityLevel,
    Settings,
    TranscriptionReport,
    plot,
    render,
    summarize,
)
from bench.transcription_score import LoggedMessage, distribution, score_dialogue
from serve_app.engine.audio.pcm import read_wav

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("bench/results/transcription.json")
DEFAULT_FIGURE = Path("bench/figures/transcription.png")


class StreamLog(BaseModel):
    """Everything one streamed dialogue produced.

    Attributes:
        messages: Every JSON message from the server, timed from the stream's start (the
            moment the first frame's audio began).
        ack_lag_s: Per ``AudioAdded``: its arrival minus when that frame was sent.
        error: Why the stream failed, if it did.
    """

    dialogue: str
    messages: list[LoggedMessage] = Field(default_factory=list)
    ack_lag_s: list[float] = Field(default_factory=list)
    end_of_transcript_s: float | None = None
    error: str | None = None


def start_recognition(max_speakers: int, sample_rate: int = 16_000) -> dict[str, object]:
    """The ``StartRecognition`` message: raw PCM16, English, partials and speaker diarization."""
    return {
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": sample_rate},
        "transcription_config": {
            "language": "en",
            "enable_partials": True,
            "max_delay": 2.0,
            "diarization": "speaker",
            "speaker_diarization_config": {"max_speakers": max_speakers},
        },
    }


async def stream_dialogue(
    url: str, dialogue: Dialogue, frame_ms: int = 100, api_key: str | None = None, timeout_s: float = 60.0
) -> StreamLog:
    """Stream one dialogue in real time to a Speechmatics RT endpoint and record the replies.

    Args:
        url: The endpoint, e.g. ``ws://127.0.0.1:8000/v2``.
        dialogue: What to stream (its WAV must be 16-bit mono at ``dialogue.sample_rate``).
        frame_ms: Audio per binary frame.
        api_key: Sent as a bearer token when given.
        timeout_s: How long to wait for ``RecognitionStarted`` and, after ``EndOfStream``,
            for ``EndOfTranscript``.

    Returns:
        The log; ``error`` says what went wrong (the log up to then is kept).
    """
    log = StreamLog(dialogue=dialogue.name)
    pcm, rate = read_wav(dialogue.wav_path)
    frame_bytes = rate * frame_ms // 1000 * 2
    frames = [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]
    sent_at: dict[int, float] = {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            await ws.send(json.dumps(start_recognition(dialogue.speakers, rate)))
            async with asyncio.timeout(timeout_s):
                while (first := json.loads(await ws.recv()))["message"] != "RecognitionStarted":
                    if first["message"] == "Error":
                        raise RuntimeError(f"refused: {first}")
            began = time.perf_counter()
            done = asyncio.Event()

            async def receive() -> None:
                async for raw in ws:
                    now = time.perf_counter() - began
                    message = json.loads(raw)
                    log.messages.append(LoggedMessage(t_s=round(now, 4), message=message))
                    kind = message.get("message")
                    if kind == "AudioAdded" and message.get("seq_no") in sent_at:
                        log.ack_lag_s.append(round(now - sent_at[message["seq_no"]], 4))
                    elif kind == "EndOfTranscript":
                        log.end_of_transcript_s = now
                        done.set()
                        return
                    elif kind == "Error":
                        raise RuntimeError(f"server error: {message}")

            receiver = asyncio.create_task(receive())
            try:
                for seq_no, frame in enumerate(frames, 1):
                    # A microphone hands over a frame once its audio has been spoken.
                    due = seq_no * frame_ms / 1000
                    await asyncio.sleep(max(0.0, due - (time.perf_counter() - began)))
                    if receiver.done():
                        break
                    sent_at[seq_no] = time.perf_counter() - began
                    await ws.send(frame)
                if not receiver.done():
                    await ws.send(json.dumps({"message": "EndOfStream", "last_seq_no": len(frames)}))
                await asyncio.wait_for(asyncio.shield(receiver), timeout_s)
            finally:
                receiver.cancel()
            if not done.is_set():
                raise RuntimeError("the connection closed before EndOfTranscript")
    except Exception as exc:  # the log so far still counts; the run goes on with the next
        log.error = f"{type(exc).__name__}: {exc}"
    return log


def _growth_ms(scores_ms: Sequence[Sequence[float]]) -> float | None:
    """Final latency p50 over each stream's later turns minus that over its earlier ones."""
    early, late = [], []
    for latencies in scores_ms:
        half = len(latencies) // 2
        early += latencies[:half]
        late += latencies[half:]
    if not early or not late:
        return None
    return round(float(np.median(late) - np.median(early)), 1)


async def run_capacity_level(
    url: str, dialogues: Sequence[Dialogue], streams: int, args: argparse.Namespace
) -> CapacityLevel:
    """Stream ``streams`` dialogues at once and judge whether the server kept up."""
    chosen = [dialogues[i % len(dialogues)] for i in range(streams)]
    logs = await asyncio.gather(*(stream_dialogue(url, d, args.frame_ms, args.api_key) for d in chosen))
    scores = [score_dialogue(d, log.messages) for d, log in zip(chosen, logs, strict=True) if not log.error]
    final = distribution([x for s in scores for x in s.final_latency_ms])
    growth = _growth_ms([s.final_latency_ms for s in scores])
    failed = sum(log.error is not None for log in logs)
    reasons = []
    if failed:
        reasons.append(f"{failed} stream(s) failed: {next(log.error for log in logs if log.error)}")
    if final.p50 is None or final.p50 > args.keep_up_final_ms:
        reasons.append(f"final latency p50 {final.p50} ms > {args.keep_up_final_ms:.0f} ms")
    if growth is not None and growth > args.keep_up_growth_ms:
        reasons.append(f"final latency grew by {growth:.0f} ms over the stream")
    return CapacityLevel(
        streams=streams,
        partial_latency_ms=distribution([x for s in scores for x in s.partial_latency_ms]),
        final_latency_ms=final,
        audio_ack_ms=distribution([1000 * x for log in logs for x in log.ack_lag_s]),
        final_growth_ms=growth,
        failed_streams=failed,
        kept_up=not reasons,
        reason="; ".join(reasons),
    )


async def run(args: argparse.Namespace, base: str, dialogues: Sequence[Dialogue]) -> TranscriptionReport:
    """The accuracy pass (one dialogue at a time), then the capacity sweep."""
    url = f"{base.rstrip('/')}/v2"
    report = TranscriptionReport(
        settings=Settings(
            base_url=base,
            config=None if args.base else str(args.config),
            frame_ms=args.frame_ms,
            dialogues=len(dialogues),
            capacity_levels=args.capacity,
            keep_up_final_p50_ms=args.keep_up_final_ms,
            keep_up_growth_ms=args.keep_up_growth_ms,
            machine=f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} CPUs",
        )
    )
    # Warm-up, unmeasured: the first stream pays for lazy loading.
    await stream_dialogue(url, dialogues[0], args.frame_ms, args.api_key)
    for i, dialogue in enumerate(dialogues, 1):
        log = await stream_dialogue(url, dialogue, args.frame_ms, args.api_key)
        if log.error:
            report.errors[dialogue.name] = log.error
            print(f"[{i}/{len(dialogues)}] {dialogue.name}: FAILED {log.error}", file=sys.stderr)
            continue
        score = score_dialogue(dialogue, log.messages)
        report.dialogues.append(score)
        print(
            f"[{i}/{len(dialogues)}] {dialogue.name}: WER {score.word_errors}/{score.ref_words},"
            f" speakers {score.speaker_correct}/{score.speaker_matched},"
            f" final p50 {distribution(score.final_latency_ms).p50} ms",
            file=sys.stderr,
        )
        if args.logs:
            with args.logs.open("a") as out:
                out.write(log.model_dump_json() + "\n")
    if report.dialogues:
        report.summary = summarize(report.dialogues)
        for speakers in sorted({d.speakers for d in report.dialogues}):
            group = [d for d in report.dialogues if d.speakers == speakers]
            report.summary_by_speakers[str(speakers)] = summarize(group)
    for streams in args.capacity:
        await asyncio.sleep(args.rest_s)
        level = await run_capacity_level(url, dialogues, streams, args)
        report.capacity.append(level)
        print(f"capacity {streams} streams: kept up {level.kept_up} {level.reason}", file=sys.stderr)
        if not level.kept_up:
            break
        report.capacity_streams = streams
    return report


@contextlib.contextmanager
def local_server(config: Path, workdir: Path, timeout_s: float = 600) -> Iterator[str]:
    """``serve run CONFIG`` behind HAProxy on free ports until the block ends; yields ``ws://host:port``.

    Uses the helpers of the HAProxy-mode test server (Serve's environment as
    ``scripts/run.sh`` sets it, a marker in every process's environment, and a stop that
    also ends the processes Ray starts outside the process group, HAProxy included).
    """
    from tests.serve.haproxy_server import (
        free_port,
        haproxy_environment,
        ingress_servers_up,
        stop_process_group,
    )

    spec = yaml.safe_load(config.read_text())
    port, stats_port = free_port(), free_port()
    spec["http_options"] = {**spec.get("http_options", {}), "host": "127.0.0.1", "port": port}
    config_path = workdir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(spec))
    env, marker = haproxy_environment(stats_port)
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("serve")), "run", str(config_path)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(port) or not ingress_servers_up(stats_port):
            if process.poll() is not None:
                raise RuntimeError(f"serve run exited ({process.returncode}): {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not up in {timeout_s} s: {log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        stop_process_group(process, signal.SIGINT, marker)


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as response:
            return response.status == 200
    except OSError:
        return False


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("expected stream counts >= 1, e.g. 1,2,3,4,6")
    return levels


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.transcription``."""
    p = argparse.ArgumentParser(prog="python -m bench.transcription", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="a running server, e.g. ws://127.0.0.1:8000 (default: start one)")
    p.add_argument("--config", type=Path, default=Path("configs/local.yaml"), help="Serve config to start")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="test set cache directory")
    p.add_argument("--two", type=int, default=20, help="two-speaker dialogues in the test set")
    p.add_argument("--three", type=int, default=10, help="three-speaker dialogues in the test set")
    p.add_argument("--limit", type=int, help="stream only this many dialogues (2- and 3-speaker alternating)")
    p.add_argument("--frame-ms", type=int, default=100, help="audio per binary frame (default 100)")
    p.add_argument("--capacity", type=_levels, default=[1, 2, 3, 4, 6, 8], metavar="N,N,...")
    p.add_argument("--keep-up-final-ms", type=float, default=2500.0, help="a level's final p50 bound")
    p.add_argument("--keep-up-growth-ms", type=float, default=1000.0, help="allowed final-latency growth")
    p.add_argument("--rest-s", type=float, default=3.0, help="pause before each capacity level")
    p.add_argument("--api-key", help="bearer token, when the server requires one")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE)
    p.add_argument("--logs", type=Path, help="append every stream's message log here (JSON lines)")
    p.add_argument("--render", type=Path, metavar="REPORT", help="only print and plot a saved report")
    return p


def select(dialogues: Sequence[Dialogue], limit: int | None) -> list[Dialogue]:
    """The first ``limit`` dialogues, 2- and 3-speaker ones alternating (all when ``None``)."""
    two = [d for d in dialogues if d.speakers == 2]
    three = [d for d in dialogues if d.speakers != 2]
    mixed = [d for pair in zip(two, three, strict=False) for d in pair]
    mixed += two[len(three) :] + three[len(two) :]
    return mixed if limit is None else mixed[:limit]


def main(argv: list[str] | None = None) -> int:
    """Build the test set, start a server unless ``--base`` is given, run, write the report."""
    args = build_parser().parse_args(argv)
    if args.render:
        saved = TranscriptionReport.model_validate_json(args.render.read_text())
        print(render(saved))
        print(f"plot: {plot(saved, args.figure)}", file=sys.stderr)
        return 0
    # A background job starts with SIGINT ignored, and the server would inherit that: take
    # SIGINT and SIGTERM as an interrupt, so the server is always stopped on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"test set in {args.data} ...", file=sys.stderr)
    dialogues = select(build_test_set(args.data, args.two, args.three), args.limit)
    with contextlib.ExitStack() as stack:
        base = args.base
        if base is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voxray-bench-")))
            print(f"starting {args.config} ...", file=sys.stderr)
            base = stack.enter_context(local_server(args.config, workdir))
        report = asyncio.run(run(args, base, dialogues))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.model_dump_json(indent=1))
    print(render(report))
    if report.dialogues:
        print(f"plot: {plot(report, args.figure)}", file=sys.stderr)
    return 0 if report.dialogues and not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
