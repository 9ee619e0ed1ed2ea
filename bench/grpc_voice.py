"""Voice response latency over gRPC ``StreamAudio`` against ``/v1/realtime``, on one server, in one run.

The same spoken questions go to seed 002's ``voice_workflow.VoiceGateway/StreamAudio`` (16 kHz
PCM16 in protobuf messages, through Serve's gRPC ingress) and to ``/v1/realtime`` (24 kHz
base64 JSON over a WebSocket), interleaved turn by turn with the order alternating, each turn
on a fresh call, streamed in real time in 20 ms frames (``bench.protocols.interleave``).
Latency is measured the same way for both: from sending the last voiced frame (above
-45 dBFS) to receiving the first byte of reply audio. Server VAD ends every turn.

    python -m bench.grpc_voice --base ws://127.0.0.1:8000 --grpc 127.0.0.1:50051 \\
        --repeats 8 --out bench/results/grpc_voice.json

:class:`VoiceCall` is the gRPC client of both voice streams; the serve and models tests use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import grpc

from bench.baseline import synthesize_questions
from bench.protocols import (
    ProtocolReport,
    arguments,
    conclude,
    difference_ms,
    interleave,
    realtime_turn,
    send_paced,
)
from serve_app.client.talk import FRAME_MS, RATE, last_voiced_frame
from serve_app.engine.audio.pcm import resample_pcm16
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2_grpc as vw_grpc
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2 as vv
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2_grpc as vv_grpc

GATEWAY_RATE = 16_000  # what the seed's clients send
GATEWAY_FRAME_BYTES = GATEWAY_RATE * FRAME_MS // 1000 * 2


class VoiceCall:
    """One ``StreamAudio`` (or ``Converse``) call over ``grpc.aio``, as a client drives it.

    Requests go out in order through :meth:`send`; every response is kept with its arrival
    time (``perf_counter``) in ``received``. Use as ``async with``; leaving the block cancels
    the call if it is still open.

    Args:
        target: ``host:port`` of the gRPC server.
        rpc: ``StreamAudio`` or ``Converse``.
        api_key: Sent as ``authorization: Bearer <key>`` call metadata.
    """

    def __init__(self, target: str, rpc: str = "StreamAudio", api_key: str | None = None) -> None:
        self.target = target
        self.rpc = rpc
        self.received: list[tuple[float, Any]] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._request = vw.ClientMessage if rpc == "StreamAudio" else vv.ConverseRequest
        self._changed = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> VoiceCall:
        self._channel = grpc.aio.insecure_channel(self.target)
        if self.rpc == "StreamAudio":
            self._call = vw_grpc.VoiceGatewayStub(self._channel).StreamAudio(metadata=self._metadata)
        else:
            self._call = vv_grpc.VoxrayVoiceStub(self._channel).Converse(metadata=self._metadata)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def _read(self) -> None:
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:
                self.received.append((time.perf_counter(), message))
                self._changed.set()
        except grpc.aio.AioRpcError:
            pass  # the status is read below
        finally:
            self.code = await self._call.code()
            self.details = await self._call.details() or ""
            self._changed.set()

    @property
    def messages(self) -> list[Any]:
        """The responses so far, in order."""
        return [message for _, message in self.received]

    def kinds(self) -> list[str]:
        """Each response as one word: its field, or for a gateway event its type (``END_OF_TURN``)."""
        words = []
        for message in self.messages:
            kind = message.WhichOneof("content")
            words.append(vw.EventType.Name(message.event.type) if kind == "event" else kind)
        return words

    def of(self, kind: str) -> list[Any]:
        """The payloads of the responses holding field ``kind``."""
        return [getattr(m, kind) for m in self.messages if m.WhichOneof("content") == kind]

    async def send(self, **fields: Any) -> None:
        """Send one request (``config=``, ``audio_chunk=``, ``text_input=``; Converse's fields)."""
        await self._call.write(self._request(**fields))

    async def done_writing(self) -> None:
        """Half-close: the client sends nothing more."""
        await self._call.done_writing()

    def cancel(self) -> None:
        """Cancel the call (the client's ``CANCELLED``)."""
        if self._call is not None and not self._call.done():
            self._call.cancel()

    async def wait(self, predicate: Any, timeout_s: float = 60.0) -> Any:
        """Wait until ``predicate(self)`` is truthy (or the call ended: ``AssertionError``)."""

        async def poll() -> Any:
            while not (value := predicate(self)):
                if self.code is not None:
                    raise AssertionError(f"the call ended {self.code.name} {self.details!r}: {self.kinds()}")
                self._changed.clear()
                await self._changed.wait()
            return value

        return await asyncio.wait_for(poll(), timeout_s)

    async def ended(self, timeout_s: float = 60.0) -> grpc.StatusCode:
        """Wait for the call's status."""

        async def status() -> grpc.StatusCode:
            while self.code is None:
                self._changed.clear()
                await self._changed.wait()
            return self.code

        return await asyncio.wait_for(status(), timeout_s)

    async def stream(
        self, pcm: bytes, frame_bytes: int, realtime: bool = True, field: str = "audio_chunk"
    ) -> None:
        """Send ``pcm`` in frames of ``frame_bytes``, in real time or as fast as the call takes them."""
        for start in range(0, len(pcm), frame_bytes):
            await self.send(**{field: pcm[start : start + frame_bytes]})
            if realtime:
                await asyncio.sleep(FRAME_MS / 1000)


async def gateway_turn(target: str, pcm24k: bytes, api_key: str | None, timeout_s: float = 60.0) -> float:
    """One StreamAudio call: stream the question in real time; ms from last voiced frame to first audio."""
    pcm = resample_pcm16(pcm24k, RATE, GATEWAY_RATE)
    last_voiced = last_voiced_frame(pcm, frame_bytes=GATEWAY_FRAME_BYTES)
    async with VoiceCall(target, api_key=api_key) as call:
        await call.send(config=vw.VoiceConfig(language_code="en-US", sample_rate=GATEWAY_RATE))
        await call.wait(lambda c: "LISTENING" in c.kinds(), timeout_s)
        frames = [pcm[i : i + GATEWAY_FRAME_BYTES] for i in range(0, len(pcm), GATEWAY_FRAME_BYTES)]

        def audio_at(c: VoiceCall) -> float | None:
            return next((t for t, m in c.received if m.WhichOneof("content") == "audio_chunk"), None)

        sent_voiced_at = await send_paced(
            frames, lambda f: call.send(audio_chunk=f), last_voiced, lambda: audio_at(call) is not None
        )
        received_at = await call.wait(audio_at, timeout_s)
    if sent_voiced_at is None:
        raise RuntimeError("no voiced frame was sent before the reply began")
    return (received_at - sent_voiced_at) * 1000


class GrpcVoiceReport(ProtocolReport):
    """Every turn, the medians per protocol, and StreamAudio's minus Realtime's."""

    grpc_target: str
    stream_audio_minus_realtime_ms: float | None = None


async def run(args: argparse.Namespace) -> GrpcVoiceReport:
    report = GrpcVoiceReport(base_url=args.base, grpc_target=args.grpc, questions=args.questions)
    spoken = await synthesize_questions(args.questions, 0.3, 1.5)
    turns = {
        "realtime": lambda pcm: realtime_turn(f"{args.base}/v1/realtime", pcm, args.api_key),
        "stream_audio": lambda pcm: gateway_turn(args.grpc, pcm, args.api_key),
    }
    await interleave(turns, spoken, args.repeats, report)
    report.stream_audio_minus_realtime_ms = difference_ms(report.median_ms, "stream_audio", "realtime")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="host:port of the gRPC ingress")
    args = parser.parse_args(argv)
    return conclude(asyncio.run(run(args)), args.out, "stream_audio", "realtime")


if __name__ == "__main__":
    sys.exit(main())
