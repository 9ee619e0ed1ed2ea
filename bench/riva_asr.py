"""Riva streaming recognition on the live-transcription test set: final latency, WER, speakers.

Each two-speaker dialogue of ``bench.dialogues`` is streamed alone to
``nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize`` as a microphone would deliver it,
with voxray's own stubs: a ``streaming_config`` (LINEAR_PCM 16 kHz, en-US, interim results,
word time offsets, speaker diarization with ``max_speaker_count`` the dialogue's speakers),
then 100 ms ``audio_content`` messages (``--frame-ms``), message *k* sent once the wall clock
has reached the end of its audio, then the half-close; every response is kept with its
arrival time since the stream began. One unmeasured stream warms up first.

The responses are scored exactly as ``bench.transcription`` scores Speechmatics RT (interim
results as partials, finals as finals, speaker tag *n* as ``Sn``; ``bench.transcription_score``):

- **final latency**, per turn: arrival of the final result holding the turn's last word −
  that word's end in the audio (the time from the end of the speech to its final);
- partial latency, per reference word: arrival of the first interim or final result holding it
  − the word's end;
- WER of the finals, and speaker accuracy under the best label mapping.

    python -m bench.riva_asr --grpc 127.0.0.1:50051 --dialogues 5
    python -m bench.riva_asr --local configs/local.yaml --dialogues 5 --compare-rt \\
        --out bench/results/riva_asr.json

``--compare-rt`` streams each dialogue to Speechmatics RT (``/v2``) too, as ``bench.transcription``
does, the order alternating: the same engine through the other protocol, under the same load.
``--local`` starts ``serve run CONFIG`` behind HAProxy on free ports (HTTP and gRPC) and stops
it at the end. Prints one line per dialogue and the medians; exit 1 when a stream failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import yaml
from pydantic import BaseModel, Field

from bench.dialogues import Dialogue, build_dialogue, default_data_dir
from bench.transcription_score import DialogueScore, Distribution, LoggedMessage, distribution, score_dialogue
from serve_app.engine.audio.pcm import read_wav
from serve_app.protocols.grpc_api.proto import riva_asr_pb2 as asr
from serve_app.protocols.grpc_api.proto import riva_asr_pb2_grpc, riva_audio_pb2


class RivaStreamLog(BaseModel):
    """One dialogue's stream: its responses as ``LoggedMessage`` (Speechmatics RT shape)."""

    dialogue: str
    messages: list[LoggedMessage] = Field(default_factory=list)
    responses: int = 0
    last_final_after_end_s: float | None = None  # the last final's arrival − the end of the audio
    error: str | None = None


class RivaASRReport(BaseModel):
    """Per-dialogue figures and their summary."""

    target: str
    frame_ms: int
    scores: list[DialogueScore] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)
    final_latency_ms: Distribution | None = None
    partial_latency_ms: Distribution | None = None
    wer: float | None = None
    speaker_accuracy: float | None = None
    last_final_after_end_ms: Distribution | None = None
    rt_scores: list[DialogueScore] = Field(default_factory=list)
    rt_final_latency_ms: Distribution | None = None
    rt_partial_latency_ms: Distribution | None = None


def streaming_config(speakers: int, rate: int = 16_000) -> asr.StreamingRecognizeRequest:
    """The first message: what a live captioning client with diarization asks for."""
    config = asr.RecognitionConfig(
        encoding=riva_audio_pb2.AudioEncoding.LINEAR_PCM,
        sample_rate_hertz=rate,
        language_code="en-US",
        max_alternatives=1,
        enable_automatic_punctuation=True,
        enable_word_time_offsets=True,
        diarization_config=asr.SpeakerDiarizationConfig(
            enable_speaker_diarization=True, max_speaker_count=speakers
        ),
    )
    return asr.StreamingRecognizeRequest(
        streaming_config=asr.StreamingRecognitionConfig(config=config, interim_results=True)
    )


def as_logged(t_s: float, response: asr.StreamingRecognizeResponse) -> list[LoggedMessage]:
    """A Riva response as the Speechmatics RT messages ``bench.transcription_score`` reads."""
    logged = []
    for result in response.results:
        if not result.alternatives:
            continue
        words = [
            {
                "type": "word",
                "start_time": w.start_time / 1000,
                "end_time": w.end_time / 1000,
                "alternatives": [
                    {"content": w.word, "speaker": f"S{w.speaker_tag}" if w.speaker_tag else "UU"}
                ],
            }
            for w in result.alternatives[0].words
        ]
        kind = "AddTranscript" if result.is_final else "AddPartialTranscript"
        logged.append(LoggedMessage(t_s=round(t_s, 4), message={"message": kind, "results": words}))
    return logged


async def stream_dialogue(
    target: str,
    dialogue: Dialogue,
    frame_ms: int = 100,
    timeout_s: float = 120.0,
    limit_s: float | None = None,
) -> RivaStreamLog:
    """Stream one dialogue in real time and record every response with its arrival time.

    Args:
        target: ``host:port`` of the gRPC server.
        dialogue: What to stream (16-bit mono WAV).
        frame_ms: Audio per ``audio_content`` message.
        timeout_s: How long the responses may take after the half-close.
        limit_s: Stream only this much of the audio (the warm-up).
    """
    log = RivaStreamLog(dialogue=dialogue.name)
    pcm, rate = read_wav(dialogue.wav_path)
    if limit_s is not None:
        pcm = pcm[: round(limit_s * rate) * 2]
    frame_bytes = rate * frame_ms // 1000 * 2
    frames = [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            call = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel).StreamingRecognize()
            await call.write(streaming_config(dialogue.speakers, rate))
            began = time.perf_counter()

            async def receive() -> None:
                async for response in call:
                    now = time.perf_counter() - began
                    log.responses += 1
                    log.messages += as_logged(now, response)
                    if any(r.is_final for r in response.results):
                        log.last_final_after_end_s = round(now - len(pcm) / 2 / rate, 4)

            receiver = asyncio.create_task(receive())
            for index, frame in enumerate(frames, 1):
                # A microphone hands over a frame once its audio has been spoken.
                await asyncio.sleep(max(0.0, index * frame_ms / 1000 - (time.perf_counter() - began)))
                if receiver.done():
                    break
                await call.write(asr.StreamingRecognizeRequest(audio_content=frame))
            await call.done_writing()
            await asyncio.wait_for(receiver, timeout_s)
    except Exception as exc:  # the log so far still counts; the run goes on with the next
        log.error = f"{type(exc).__name__}: {exc}"
    return log


def _line(name: str, dialogue: Dialogue, score: DialogueScore) -> str:
    final = distribution(score.final_latency_ms)
    return (
        f"{name} {dialogue.name} ({dialogue.duration_s:.0f} s): final p50 {final.p50} ms (n {final.n}), "
        f"WER {score.word_errors}/{score.ref_words}, speaker accuracy {score.speaker_accuracy}"
    )


async def _rt_score(ws_base: str, dialogue: Dialogue, frame_ms: int) -> DialogueScore | str:
    from bench.transcription import stream_dialogue as stream_rt

    log = await stream_rt(f"{ws_base}/v2", dialogue, frame_ms)
    return log.error or score_dialogue(dialogue, log.messages)


async def run(
    target: str, dialogues: Sequence[Dialogue], frame_ms: int, ws_base: str | None = None
) -> RivaASRReport:
    """Warm up, stream each dialogue alone, score them, summarise.

    With ``ws_base`` each dialogue is also streamed to Speechmatics RT at ``/v2`` as
    ``bench.transcription`` streams it, the order alternating, for figures taken under the
    same conditions.
    """
    report = RivaASRReport(target=target, frame_ms=frame_ms)
    await stream_dialogue(target, dialogues[0], frame_ms, limit_s=4.0)
    after_end = []
    for index, dialogue in enumerate(dialogues):
        rt: DialogueScore | str | None = None
        if ws_base is not None and index % 2:
            rt = await _rt_score(ws_base, dialogue, frame_ms)
        log = await stream_dialogue(target, dialogue, frame_ms)
        if ws_base is not None and rt is None:
            rt = await _rt_score(ws_base, dialogue, frame_ms)
        if isinstance(rt, DialogueScore):
            report.rt_scores.append(rt)
            print(_line("rt  ", dialogue, rt), flush=True)
        elif rt is not None:
            report.errors[f"rt {dialogue.name}"] = rt
        if log.error:
            report.errors[dialogue.name] = log.error
            print(f"riva {dialogue.name}: FAILED {log.error}", flush=True)
            continue
        score = score_dialogue(dialogue, log.messages)
        report.scores.append(score)
        if log.last_final_after_end_s is not None:
            after_end.append(log.last_final_after_end_s * 1000)
        print(f"{_line('riva', dialogue, score)}, {log.responses} responses", flush=True)
    scores = report.scores
    if scores:
        report.final_latency_ms = distribution([x for s in scores for x in s.final_latency_ms])
        report.partial_latency_ms = distribution([x for s in scores for x in s.partial_latency_ms])
        report.wer = round(sum(s.word_errors for s in scores) / max(1, sum(s.ref_words for s in scores)), 4)
        matched = sum(s.speaker_matched for s in scores)
        report.speaker_accuracy = (
            round(sum(s.speaker_correct for s in scores) / matched, 4) if matched else None
        )
        report.last_final_after_end_ms = distribution(after_end)
    if report.rt_scores:
        report.rt_final_latency_ms = distribution([x for s in report.rt_scores for x in s.final_latency_ms])
        report.rt_partial_latency_ms = distribution(
            [x for s in report.rt_scores for x in s.partial_latency_ms]
        )
    return report


@contextlib.contextmanager
def local_grpc_server(config: Path) -> Iterator[tuple[str, str]]:
    """``serve run CONFIG`` behind HAProxy, gRPC on a free port; yields ``(ws://host:port, host:port)``."""
    from bench.transcription import local_server
    from tests.grpc_harness import wait_serving
    from tests.serve.haproxy_server import free_port

    spec = yaml.safe_load(config.read_text())
    grpc_port = free_port()
    spec["grpc_options"] = {**spec.get("grpc_options", {}), "port": grpc_port}
    with tempfile.TemporaryDirectory(prefix="voxray-riva-asr-") as tmp:
        copy = Path(tmp) / config.name
        copy.write_text(yaml.safe_dump(spec))
        with local_server(copy, Path(tmp)) as ws_base:
            target = f"127.0.0.1:{grpc_port}"
            wait_serving(target, timeout_s=300)
            yield ws_base, target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.riva_asr", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", help="host:port of a running server")
    where.add_argument("--local", type=Path, help="start this Serve config behind HAProxy for the run")
    parser.add_argument("--ws", help="with --grpc: the server's ws://host:port, for --compare-rt")
    parser.add_argument(
        "--compare-rt", action="store_true", help="also stream each dialogue to Speechmatics RT (/v2)"
    )
    parser.add_argument("--dialogues", type=int, default=5, help="two-speaker dialogues 0..N-1")
    parser.add_argument("--frame-ms", type=int, default=100, help="audio per audio_content message")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="the test set's cache")
    parser.add_argument("--out", type=Path, help="write the report (JSON) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: stream the dialogues, print the figures, write the report."""
    args = build_parser().parse_args(argv)
    dialogues = [build_dialogue(index, 2, args.data) for index in range(args.dialogues)]
    with contextlib.ExitStack() as stack:
        ws_base, target = (
            (args.ws, args.grpc) if args.grpc else stack.enter_context(local_grpc_server(args.local))
        )
        if args.compare_rt and not ws_base:
            raise SystemExit("--compare-rt with --grpc needs --ws")
        report = asyncio.run(run(target, dialogues, args.frame_ms, ws_base if args.compare_rt else None))
    figures = {"final_latency_ms", "partial_latency_ms", "wer", "speaker_accuracy", "last_final_after_end_ms"}
    print(f"riva, {len(report.scores)} dialogues: {report.model_dump(include=figures)}")
    if report.rt_scores:
        print(
            f"rt, same dialogues: final {report.rt_final_latency_ms}, partial {report.rt_partial_latency_ms}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.model_dump_json(indent=1))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
