"""GrpcStream (a gRPC stream as a live session), call metadata and status codes, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from serve_app.config import LimitsConfig
from serve_app.protocols.grpc_api.proto import voice_workflow_pb2 as vw
from serve_app.protocols.grpc_api.servicer import bearer_from_metadata, peer_host
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument, status_for
from serve_app.protocols.grpc_api.stream import GrpcStream
from serve_app.server.drain import server_restarting
from serve_app.server.limits import CloseConnection


class FakeContext:
    """The parts of Serve's gRPC context voxray uses (a test fake)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), peer: str = "ipv4:127.0.0.1:5000") -> None:
        self.metadata = metadata
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return self._peer

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class EchoSession:
    """Answers each text with a transcript; fails on "bad" (a test fake of a protocol session)."""

    id = "s1"
    protocol = "voice_gateway"

    def __init__(self, stream: GrpcStream) -> None:
        self._stream = stream
        self.closed = False
        self.finished = False
        self.responding = False

    async def handle_request(self, request: Any) -> None:
        if request.text_input == "bad":
            raise invalid_argument("bad is not a turn")
        if request.text_input == "close":
            raise server_restarting()
        await self._stream.emit(vw.ServerMessage(transcript_chunk=request.text_input))

    async def finish(self) -> None:
        self.finished = True
        await self._stream.emit(vw.ServerMessage(event=vw.ServerEvent(type=vw.END_OF_TURN)))

    async def close(self) -> None:
        self.closed = True


async def requests(*texts: str, hold: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for text in texts:
        yield vw.ClientMessage(text_input=text)
    if hold is not None:
        await hold.wait()


async def run(stream: GrpcStream, session: EchoSession, source: AsyncIterator[Any]) -> list[Any]:
    return [message async for message in stream.run(session, source)]


async def test_a_half_closed_stream_finishes_then_ends_ok() -> None:
    context = FakeContext()
    stream = GrpcStream(LimitsConfig(), context)
    session = EchoSession(stream)
    out = await run(stream, session, requests("a", "b"))
    assert [m.transcript_chunk for m in out[:2]] == ["a", "b"]
    assert out[2].event.type == vw.END_OF_TURN
    assert session.finished and session.closed and context.code is None


async def test_an_abort_sends_what_came_before_then_sets_the_status() -> None:
    context = FakeContext()
    stream = GrpcStream(LimitsConfig(), context)
    session = EchoSession(stream)
    out = await run(stream, session, requests("a", "bad", "never"))
    assert [m.transcript_chunk for m in out] == ["a"]
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and context.details == "bad is not a turn"
    assert session.closed and not session.finished


async def test_a_close_from_the_session_becomes_its_status() -> None:
    context = FakeContext()
    stream = GrpcStream(LimitsConfig(), context)
    await run(stream, EchoSession(stream), requests("close"))
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert stream.closing is not None and stream.closing.error_code == "server_shutting_down"


async def test_end_from_the_sweep_stops_a_stream_the_client_keeps_open() -> None:
    context = FakeContext()
    stream = GrpcStream(LimitsConfig(), context)
    session = EchoSession(stream)
    hold = asyncio.Event()
    task = asyncio.create_task(run(stream, session, requests("a", hold=hold)))
    await asyncio.sleep(0.05)
    stream.end(server_restarting())
    await asyncio.wait_for(task, 5)
    assert context.code == grpc.StatusCode.UNAVAILABLE and session.closed


async def test_withdraw_drops_queued_messages_it_picks() -> None:
    stream = GrpcStream(LimitsConfig(), FakeContext())
    for chunk in (b"1", b"2"):
        await stream.emit(vw.ServerMessage(audio_chunk=chunk))
    await stream.emit(vw.ServerMessage(transcript_chunk="kept"))
    before = stream.queued_bytes
    assert stream.withdraw(lambda m: m.WhichOneof("content") == "audio_chunk") == 2
    assert 0 < stream.queued_bytes < before


def test_an_idle_stream_breaks_the_idle_limit() -> None:
    stream = GrpcStream(LimitsConfig(idle_timeout_s=5), FakeContext())
    assert stream.check(stream.opened_at + 1) is None
    broken = stream.check(stream.opened_at + 6)
    assert broken is not None and broken.error_code == "idle_timeout"


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer k1"),), "k1"),
        ((("Authorization", "bearer  k2 "),), "k2"),
        ((("authorization", "Basic k3"),), None),
        ((("authorization", "Bearer"),), None),
        ((), None),
    ],
)
def test_the_key_comes_from_bearer_metadata(metadata: tuple[tuple[str, str], ...], token: str | None) -> None:
    assert bearer_from_metadata(FakeContext(metadata)) == token


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:10.0.0.7:5000", "10.0.0.7"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", None), ("", None)],
)
def test_the_client_address_comes_from_the_peer(peer: str, host: str | None) -> None:
    assert peer_host(FakeContext(peer=peer)) == host


@pytest.mark.parametrize(
    ("close", "code"),
    [
        (CloseConnection(1008, "missing_api_key", "no key"), grpc.StatusCode.UNAUTHENTICATED),
        (CloseConnection(1013, "session_limit_reached", "full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (server_restarting(), grpc.StatusCode.UNAVAILABLE),
        (CloseConnection(1008, "idle_timeout", "idle"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (CloseConnection(1013, "something_new", "later"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (CloseConnection(1008, "something_else", "no"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_refusals_map_to_status_codes(close: CloseConnection, code: grpc.StatusCode) -> None:
    assert status_for(close) == code


def test_an_abort_survives_pickling() -> None:
    import pickle

    abort = pickle.loads(pickle.dumps(GrpcAbort(grpc.StatusCode.INVALID_ARGUMENT, "why")))
    assert (abort.code, abort.details) == (grpc.StatusCode.INVALID_ARGUMENT, "why")
