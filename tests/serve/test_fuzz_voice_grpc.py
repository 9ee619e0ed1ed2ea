"""Hostile input on the gRPC voice streams, beside a healthy conversation, leaking nothing.

Each case is one call to seed 002's ``StreamAudio`` or voxray's ``Converse`` on the shared
``grpc_server`` (fake models, behind HAProxy): what the client sends, then how the call must
end (its status code and a word of its details) and how many recoverable error messages
(``ERROR`` events, ``Error``) come first. Meanwhile a healthy StreamAudio conversation
speaks a question in real time and must get its spoken answer; afterwards the Ingress's
``/healthz`` counts as many live sessions as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from bench.grpc_voice import GATEWAY_FRAME_BYTES, GATEWAY_RATE, VoiceCall
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.grpc_api.proto import voxray_voice_pb2 as vv
from tests.serve.haproxy_server import HAProxyServer

TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 1 << 20  # limits.max_message_bytes (default)
GW, CV = "StreamAudio", "Converse"
CONFIG = {"config": vw.VoiceConfig(language_code="en-US", sample_rate=16000)}
SESSION = {"config": vv.SessionConfig()}
SPEECH = "speech"  # stands for a spoken question (16 kHz) in a case's requests
RAW_PATHS = {GW: "/voice_workflow.VoiceGateway/StreamAudio", CV: "/voxray.voice.v1.VoxrayVoice/Converse"}


@dataclass(frozen=True)
class Case:
    """One call: requests (field dicts, ``SPEECH``, or raw ``bytes`` frames), then its ending.

    Attributes:
        name: The case's label in failure messages.
        rpc: ``StreamAudio`` or ``Converse``.
        requests: Sent in order, as fast as the call takes them.
        code: The status the call must end with (the client's own for ``cancel``).
        needle: A word its details must hold.
        errors: Recoverable error messages expected before the end (``None``: any number, for
            an ending that drops what was still queued).
        cancel: Cancel the call after the requests instead of half-closing it.
    """

    name: str
    rpc: str
    requests: tuple[Any, ...]
    code: str
    needle: str = ""
    errors: int | None = 0
    cancel: bool = False


def gw(
    name: str,
    *requests: Any,
    code: str = "OK",
    needle: str = "",
    errors: int | None = 0,
    cancel: bool = False,
) -> Case:
    return Case(name, GW, requests, code, needle, errors, cancel)


def cv(name: str, *requests: Any, code: str = "OK", needle: str = "", errors: int = 0) -> Case:
    return Case(name, CV, requests, code, needle, errors)


BAD = "INVALID_ARGUMENT"
TOO_BIG = "RESOURCE_EXHAUSTED"
CASES = [
    gw("text before config", {"text_input": "hi"}, code=BAD, needle="first"),
    gw("audio before config", {"audio_chunk": b"\x00" * 640}, code=BAD, needle="first"),
    gw("empty message first", {}, code=BAD, needle="first"),
    gw("half-closed before config", code=BAD, needle="config"),
    gw("unknown field first", b"\x50\x01", code=BAD, needle="first"),
    # grpc takes an undecodable frame for the end of the client's messages: a half-close.
    gw("not protobuf", b"\xff\xff\xff\xff", code=BAD, needle="config"),
    gw("not protobuf after config", vw.ClientMessage(**CONFIG).SerializeToString(), b"\xff\xff\xff"),
    gw("rate too low", {"config": vw.VoiceConfig(sample_rate=4000)}, code=BAD, needle="sample_rate"),
    gw("rate negative", {"config": vw.VoiceConfig(sample_rate=-16000)}, code=BAD, needle="sample_rate"),
    gw("rate huge", {"config": vw.VoiceConfig(sample_rate=2**31 - 1)}, code=BAD, needle="sample_rate"),
    gw("language not a tag", {"config": vw.VoiceConfig(language_code="<en>")}, code=BAD, needle="language"),
    gw(
        "huge audio chunk",
        CONFIG,
        {"audio_chunk": bytes(2 * MAX_MESSAGE_BYTES)},
        code=TOO_BIG,
        needle="exceeds",
    ),
    gw("huge text", CONFIG, {"text_input": "x" * (MAX_MESSAGE_BYTES + 1)}, code=TOO_BIG, needle="exceeds"),
    gw("text over max_text_chars", CONFIG, {"text_input": "x" * 20_001}, errors=1),
    gw("second config", CONFIG, CONFIG, errors=1),
    gw("empty text", CONFIG, {"text_input": " "}, errors=1),
    gw(
        "empty and odd audio",
        CONFIG,
        {"audio_chunk": b""},
        {"audio_chunk": b"\x01"},
        {"audio_chunk": b"\x02" * 3},
    ),
    gw("half-closed after config", CONFIG),
    gw("half-closed mid-speech", CONFIG, SPEECH),
    gw("cancelled", CONFIG, SPEECH, code="CANCELLED", cancel=True),
    gw(
        "invalid budget spent",
        CONFIG,
        *[{"text_input": ""}] * 101,
        code=TOO_BIG,
        needle="invalid",
        errors=None,
    ),
    cv("audio before config", {"audio": b"\x00\x00"}, code=BAD, needle="first"),
    cv("commit before config", {"commit": vv.Commit()}, code=BAD, needle="first"),
    cv("unknown encoding", {"config": vv.SessionConfig(encoding=7)}, code=BAD, needle="encoding"),
    cv(
        "output rate huge",
        {"config": vv.SessionConfig(output_sample_rate_hz=10**6)},
        code=BAD,
        needle="output",
    ),
    cv(
        "instructions too long",
        {"config": vv.SessionConfig(instructions="x" * 20_001)},
        code=BAD,
        needle="instr",
    ),
    cv("voice too long", {"config": vv.SessionConfig(voice="v" * 201)}, code=BAD, needle="voice"),
    cv("huge audio", SESSION, {"audio": bytes(2 * MAX_MESSAGE_BYTES)}, code=TOO_BIG, needle="exceeds"),
    cv("cancel with no reply", SESSION, {"cancel": vv.Cancel()}, errors=1),
    cv("commit with nothing spoken", SESSION, {"commit": vv.Commit()}, errors=1),
    cv(
        "manual commit too short",
        {"config": vv.SessionConfig(manual_turns=True)},
        {"commit": vv.Commit()},
        errors=1,
    ),
    cv("second config", SESSION, SESSION, errors=1),
]


def error_count(call: VoiceCall) -> int:
    return call.kinds().count("ERROR" if call.rpc == GW else "error")


async def raw_call(target: str, case: Case) -> tuple[grpc.StatusCode, str]:
    """Frames that need not be valid protobuf, through a channel with no serializer."""
    response = vw.ServerMessage if case.rpc == GW else vv.ConverseResponse
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.stream_stream(RAW_PATHS[case.rpc], lambda b: b, response.FromString)
        call = method(iter(case.requests))
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                pass
        return await call.code(), await call.details() or ""


async def run_case(target: str, case: Case, speech: bytes) -> None:
    if any(isinstance(r, bytes) for r in case.requests):
        code, details = await asyncio.wait_for(raw_call(target, case), TIMEOUT_S)
        assert code.name == case.code and case.needle in details, (code, details)
        return
    async with VoiceCall(target, rpc=case.rpc) as call:
        try:
            for request in case.requests:
                if request == SPEECH:
                    await call.stream(speech, GATEWAY_FRAME_BYTES, realtime=False)
                else:
                    await call.send(**request)
            if case.cancel:
                call.cancel()
            else:
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the server ended the call while requests were still going out
        code = await call.ended(TIMEOUT_S)
    assert code.name == case.code and case.needle in call.details, (code, call.details, call.kinds())
    assert case.errors is None or error_count(call) == case.errors, call.kinds()
    if case.requests and SPEECH in case.requests and not case.cancel:
        assert call.kinds()[-2:] == ["END_OF_TURN", "LISTENING"], call.kinds()  # answered before the end


async def healthy_conversation(target: str, speech: bytes) -> VoiceCall:
    """A question spoken in real time; the call once its answer ended and it was half-closed."""
    async with VoiceCall(target) as call:
        await call.send(**CONFIG)
        await call.stream(speech, GATEWAY_FRAME_BYTES, realtime=True)
        await call.wait(lambda c: "END_OF_TURN" in c.kinds(), TIMEOUT_S)
        await call.done_writing()
        await call.ended(TIMEOUT_S)
    return call


async def sessions_back_to(server: HAProxyServer, count: int, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (
        live := (await asyncio.to_thread(server.healthz))["sessions"]
    ) != count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return live


@pytest.mark.parametrize("rpc", [GW, CV])
async def test_hostile_input_ends_only_its_own_call_and_leaks_nothing(
    grpc_server: HAProxyServer, make_utterance: Callable[..., bytes], rpc: str
) -> None:
    before = await sessions_back_to(grpc_server, 0, timeout_s=5.0)
    speech = make_utterance("What is the capital of France?", rate=GATEWAY_RATE, lead_silence_s=0.3)
    unfinished = make_utterance("What is the capital of France?", rate=GATEWAY_RATE, trail_silence_s=0.0)
    healthy = asyncio.create_task(healthy_conversation(grpc_server.grpc_target, speech))
    failures: dict[str, str] = {}
    for case in (c for c in CASES if c.rpc == rpc):
        try:
            await run_case(grpc_server.grpc_target, case, unfinished)
        except Exception as exc:
            failures[case.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    assert failures == {}
    call = await healthy
    assert call.code == grpc.StatusCode.OK and "ERROR" not in call.kinds()
    assert call.of("transcript_chunk")[-1] == "What is the capital of France?" and call.of("audio_chunk")
    assert await sessions_back_to(grpc_server, before) == before
