"""One admitted bidirectional gRPC stream: the gRPC twin of ``serve_app.server.connection``.

A :class:`GrpcStream` runs one protocol session (:class:`GrpcSession`: Riva streaming
recognition, Riva streaming synthesis, the VoiceGateway and voxray's own voice stream) over
the request stream Serve's gRPC ingress hands the Ingress. It offers what the Ingress's
sweep expects of a WebSocket ``Connection`` (``check``, ``end``, ``key_id``, ``session``,
``queued_bytes``), so gRPC sessions count toward the same capacity, break the same limits
(idle, too long, not reading) and end the same way when a replica drains, with a status
code instead of a close frame.

Outgoing messages go through one bounded queue (by encoded size), so a client that reads
slowly pauses the session that produces for it instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from serve_app.config import LimitsConfig
from serve_app.protocols.grpc_api.status import GrpcAbort, as_abort
from serve_app.server.connection import OutboundQueue, broken_limit
from serve_app.server.limits import CloseConnection

logger = logging.getLogger("voxray")

_END = object()  # the outbound queue's last item: the stream ends after it


class GrpcSession(Protocol):
    """What a GrpcStream runs: one protocol's session over one gRPC stream.

    The session is built with the stream's :meth:`GrpcStream.emit` to send messages.
    """

    id: str
    protocol: str

    @property
    def responding(self) -> bool:
        """Whether work for the client is in progress (the session is not idle)."""
        ...

    async def handle_request(self, request: Any) -> None:
        """Act on one client message; raises :class:`GrpcAbort` to end the call with a status."""
        ...

    async def finish(self) -> None:
        """The client half-closed its side: send what is still due, then return."""
        ...

    async def close(self) -> None:
        """Cancel everything in flight (the stream is ending, for whatever reason)."""
        ...


def _encoded_size(item: Any) -> int:
    return item.ByteSize() if isinstance(item, Message) else 0


class GrpcStream:
    """Runs one GrpcSession over one request stream until either side ends it.

    Args:
        limits: The limits section of the app config.
        context: Serve's gRPC context of the call (the status goes on it).
        key_id: The API key the client authenticated with, if any.
    """

    def __init__(self, limits: LimitsConfig, context: Any, key_id: str | None = None) -> None:
        self.key_id = key_id
        self.opened_at = time.monotonic()
        self.last_heard = self.opened_at
        self.session: GrpcSession | None = None
        self._limits = limits
        self._context = context
        self._outbound: OutboundQueue[Any] = OutboundQueue(limits.max_outbound_bytes, _encoded_size)
        self._ending: CloseConnection | None = None
        self._abort: GrpcAbort | None = None

    @property
    def queued_bytes(self) -> int:
        """Encoded messages waiting for this client."""
        return self._outbound.queued_bytes

    @property
    def closing(self) -> CloseConnection | None:
        """Why the server is ending this stream, once it is."""
        return self._ending

    @property
    def aborted(self) -> GrpcAbort | None:
        """The status the stream ended with, when not OK."""
        return self._abort

    async def emit(self, message: Message) -> None:
        """Queue one message for the client (waits while the client is behind)."""
        await self._outbound.put(message)

    def withdraw(self, unwanted: Callable[[Message], bool]) -> int:
        """Drop queued messages ``unwanted`` picks before they are sent (barge-in); how many."""
        return self._outbound.withdraw(lambda item: item is not _END and unwanted(item))

    def end(self, close: CloseConnection) -> None:
        """End the stream with ``close``'s status (first call wins); queued messages are dropped."""
        if self._ending is None:
            self._ending = close
            self._stop(as_abort(close))

    def check(self, now: float) -> CloseConnection | None:
        """The limit this stream breaks at ``now``, if any (idle, too long, not reading)."""
        responding = self.session is not None and self.session.responding
        return broken_limit(self._limits, self._outbound, now, self.opened_at, self.last_heard, responding)

    def _stop(self, abort: GrpcAbort | None) -> None:
        if abort is not None and self._abort is None:
            self._abort = abort
        self._outbound.put_now(_END)

    async def run(self, session: GrpcSession, requests: AsyncIterator[Any]) -> AsyncIterator[Message]:
        """Serve ``session``: yields the messages for the client, ending with the call.

        On a normal end (the client half-closed and the session finished) the call ends OK;
        otherwise the status of the abort goes on the context before the generator returns.

        Args:
            session: The session, built with :meth:`emit` as its emit function.
            requests: The client's messages (Serve's ``gRPCInputStream``).
        """
        self.session = session
        receiver = asyncio.create_task(self._receive(session, requests), name=f"grpc-{session.id}")
        try:
            while True:
                item = await self._outbound.get()
                if item is _END or self._ending is not None:
                    break
                yield item
                self._outbound.sent()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            with contextlib.suppress(Exception):
                await session.close()
            if self._abort is not None:
                self._context.set_code(self._abort.code)
                self._context.set_details(self._abort.details)

    async def _receive(self, session: GrpcSession, requests: AsyncIterator[Any]) -> None:
        abort: GrpcAbort | None = None
        try:
            async for request in requests:
                self.last_heard = time.monotonic()
                await session.handle_request(request)
            await session.finish()
        except GrpcAbort as exc:
            abort = exc
        except CloseConnection as close:
            self._ending = self._ending or close
            abort = as_abort(close)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s stream %s failed", session.protocol, session.id)
            abort = GrpcAbort(grpc.StatusCode.INTERNAL, "voxray failed to process this stream; see its log.")
        self._stop(abort)
