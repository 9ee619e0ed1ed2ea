"""A client that stops reading, behind HAProxy as in production: bounded memory, then cut off.

The server makes a reply of minutes of audio as fast as it can (no pacing) for a client
whose WebSocket library has stopped taking frames off the socket. Back-pressure reaches
the Ingress, whose outbound queue is bounded; after ``send_timeout_s`` without progress
the session is ended, and the Ingress's memory never grew with the unread audio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.realtime_client import user_text_item
from tests.serve.haproxy_server import HAProxyServer, haproxy_server

REPLY = " ".join(f"Sentence number {i} is here and it is long." for i in range(200))
ARGS = {
    "asr": {"backend": "fake"},
    "llm": {"backend": "fake", "max_tokens": 8000, "options": {"reply": REPLY, "tokens_per_s": 5000}},
    "tts": {"backend": "fake", "options": {"realtime_factor": 0.001, "ms_per_char": 60}},
    "session": {"max_audio_lead_ms": 0},  # ~35 MB of events, made in seconds
    "limits": {"send_timeout_s": 3, "max_outbound_bytes": 256 << 10},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxyServer]:
    with haproxy_server(ARGS, Path(tmp_path_factory.mktemp("haproxy"))) as running:
        yield running


async def test_client_that_stops_reading_is_cut_off_with_bounded_memory(server: HAProxyServer) -> None:
    before = server.ingress_rss_mb()
    assert before is not None, server.log.read_text()[-2000:]
    # max_queue=1: the client library stops taking frames off the socket, as a stuck app would.
    # A small receive buffer: loopback TCP would otherwise grow it to 32 MB and hold the reply.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    ws = await websockets.connect(server.url, sock=sock, max_size=None, max_queue=1)
    await ws.send(json.dumps(user_text_item("Tell me a long story.")))
    await ws.send(json.dumps({"type": "response.create"}))
    peak = before
    for _ in range(120):  # noticed within send_timeout_s + the 1 s sweep; closing may take 10 s more
        await asyncio.sleep(0.5)
        peak = max(peak, server.ingress_rss_mb() or 0)
        if (await asyncio.to_thread(server.healthz))["sessions"] == 0:
            break
    assert (await asyncio.to_thread(server.healthz))["sessions"] == 0, "the stalled session is still open"
    received = 0
    try:  # the client wakes up: it gets what was in flight, then the connection is gone
        while True:
            received += len(await asyncio.wait_for(ws.recv(), 30))
    except websockets.ConnectionClosed:
        pass
    assert received < 20 << 20, f"{received} bytes reached the client: nothing was held back"
    assert peak - before < 100, f"Ingress RSS grew {peak - before:.0f} MB for one stalled client"


async def test_peer_that_never_answers_pings_is_dropped(server: HAProxyServer) -> None:
    """A dead peer (gone without a FIN) is found by the server's WebSocket pings."""
    sessions_before = (await asyncio.to_thread(server.healthz))["sessions"]
    # A raw handshake, then silence: no pong will ever come, as from a vanished phone.
    sock = socket.create_connection(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    try:
        opened = False
        for _ in range(120):  # uvicorn pings every 20 s and gives up 20 s later
            sessions = (await asyncio.to_thread(server.healthz))["sessions"]
            opened = opened or sessions > sessions_before
            if opened and sessions == sessions_before:
                break
            await asyncio.sleep(1)
        assert opened and sessions == sessions_before, "the silent peer's session was not dropped"
    finally:
        sock.close()
