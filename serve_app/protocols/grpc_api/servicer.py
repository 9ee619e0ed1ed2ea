"""The gRPC methods of the Ingress, by RPC name: what Serve's gRPC ingress calls.

Serve routes a gRPC call to the app's ingress deployment and calls its method named like the
RPC (``/nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize`` calls
``StreamingRecognize``), handing it the request (or a ``gRPCInputStream`` of requests) and,
when the method takes one, a ``grpc_context`` (metadata in, status out). The Ingress inherits
these methods from :class:`GrpcServicer`; each admits the call (drain, API key, capacity)
exactly as a WebSocket is admitted, then hands it to its protocol's module.

Services (``serve_app.protocols.grpc_api.SERVICER_FUNCTIONS`` registers them):
``grpc.health.v1.Health``, ``nvidia.riva.asr.RivaSpeechRecognition``,
``nvidia.riva.tts.RivaSpeechSynthesis``, ``voice_workflow.VoiceGateway`` and
``voxray.voice.v1.VoxrayVoice``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from serve_app.observability import metrics
from serve_app.protocols.grpc_api.proto import health_pb2, riva_asr_pb2, riva_tts_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort, as_abort, set_status
from serve_app.protocols.grpc_api.stream import GrpcSession, GrpcStream
from serve_app.protocols.riva.recognition import RivaStreamingRecognition, recognition_config, recognize
from serve_app.protocols.riva.synthesis import RivaStreamingSynthesis, synthesize
from serve_app.protocols.riva.tts_voices import synthesis_config
from serve_app.protocols.voice_grpc.converse import ConverseSession
from serve_app.protocols.voice_grpc.gateway import VoiceGatewaySession
from serve_app.protocols.voice_grpc.session import VoiceStreamSession
from serve_app.server.drain import server_restarting
from serve_app.server.limits import CloseConnection

logger = logging.getLogger("voxray")

Reply = TypeVar("Reply", bound=Message)

HEALTH_WATCH_POLL_S = 1.0


def metadata_value(context: Any, name: str) -> str | None:
    """The value of call metadata ``name`` (keys are lower-case on the wire), if sent."""
    if context is None:
        return None
    for key, value in context.invocation_metadata():
        if key.lower() == name:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def bearer_from_metadata(context: Any) -> str | None:
    """The API key of ``authorization: Bearer <key>`` call metadata, if sent."""
    value = metadata_value(context, "authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def peer_host(context: Any) -> str | None:
    """The client's address from gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    peer = context.peer() if context is not None else ""
    kind, _, rest = (peer or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None


class GrpcServicer:
    """The Ingress's gRPC methods. Mixed into ``serve_app.server.ingress.Ingress``.

    Relies on the Ingress's ``_config``, ``_admission``, ``_draining()``, ``_reserve()``,
    ``_holding()``, ``_start_sweeper()`` and ``_refused``.
    """

    _config: Any
    _admission: Any
    _refused: Any

    # -- admission -------------------------------------------------------------------------

    def _grpc_authenticate(self, context: Any) -> str | None:
        """Refuse a call on a draining replica or without a valid key; returns the key id.

        Raises:
            GrpcAbort: ``UNAVAILABLE`` while draining, ``UNAUTHENTICATED`` or
                ``PERMISSION_DENIED`` for credentials.
        """
        if self._draining():  # type: ignore[attr-defined]
            raise as_abort(server_restarting())
        try:
            return self._admission.check_key(peer_host(context), bearer_from_metadata(context))
        except CloseConnection as refused:
            if refused.error_code == "missing_api_key":
                raise GrpcAbort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "You didn't provide an API key. Send call metadata 'authorization: Bearer <key>' "
                    "(Riva clients: --metadata authorization 'Bearer <key>').",
                ) from None
            raise as_abort(refused) from None

    def _count_refusal(self, abort: GrpcAbort, protocol: str) -> None:
        reason = abort.code.name.lower()
        self._refused[reason] += 1
        metrics.count("voxray_connections_rejected", reason=reason, protocol=protocol)
        logger.info("refused a %s call: %s %s", protocol, abort.code.name, abort.details)

    async def _grpc_unary(
        self,
        context: Any,
        protocol: str,
        empty: Callable[[], Reply],
        handler: Callable[[], Awaitable[Reply]],
        *,
        authenticate: bool = True,
    ) -> Reply:
        """Run one unary call: admit it, run ``handler``, and turn failures into a status.

        Args:
            context: Serve's gRPC context.
            protocol: The service's label in metrics and logs.
            empty: Makes the (empty) reply that goes with an error status.
            handler: Produces the reply.
            authenticate: Whether the call needs a key (health checks do not).
        """
        try:
            if authenticate:
                self._grpc_authenticate(context)
            return await handler()
        except GrpcAbort as abort:
            if abort.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                self._count_refusal(abort, protocol)
            set_status(context, abort)
        except CloseConnection as close:
            set_status(context, as_abort(close))
        except Exception:
            logger.exception("%s call failed", protocol)
            failed = GrpcAbort(grpc.StatusCode.INTERNAL, "voxray failed on this call; see its log.")
            set_status(context, failed)
        return empty()

    async def _grpc_stream(
        self,
        requests: AsyncIterator[Any],
        context: Any,
        protocol: str,
        build: Callable[[GrpcStream], GrpcSession],
    ) -> AsyncIterator[Message]:
        """Run one bidirectional stream as a live session (see ``GrpcStream``).

        Args:
            requests: Serve's ``gRPCInputStream`` of the client's messages.
            context: Serve's gRPC context.
            protocol: The service's label in metrics and logs.
            build: Makes the protocol's session, given the stream (for ``emit``).
        """
        self._start_sweeper()  # type: ignore[attr-defined]
        stream = GrpcStream(self._config.limits, context)
        try:
            stream.key_id = self._grpc_authenticate(context)
            session = build(stream)
            await self._reserve(session.id, stream.key_id)  # type: ignore[attr-defined]
        except GrpcAbort as abort:
            self._count_refusal(abort, protocol)
            set_status(context, abort)
            return
        except CloseConnection as refused:
            abort = as_abort(refused)
            self._count_refusal(abort, protocol)
            set_status(context, abort)
            return
        except Exception:  # the AccessRegistry is unreachable (restarting): fail closed, retryably
            logger.exception("access check failed")
            set_status(context, GrpcAbort(grpc.StatusCode.UNAVAILABLE, "Could not check credentials; retry."))
            return
        async with self._holding(session.id, stream, protocol):  # type: ignore[attr-defined]
            async for message in stream.run(session, requests):
                yield message

    # -- grpc.health.v1.Health -------------------------------------------------------------

    def _health_status(self) -> int:
        response = health_pb2.HealthCheckResponse
        return response.NOT_SERVING if self._draining() else response.SERVING  # type: ignore[attr-defined]

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:
        """``grpc.health.v1.Health/Check``: SERVING, or NOT_SERVING while this replica drains.

        Any ``service`` name gets the server's status (this server's services live and drain
        together). No key needed: load balancers and kubelets probe it.
        """

        async def status() -> Any:
            return health_pb2.HealthCheckResponse(status=self._health_status())

        empty = health_pb2.HealthCheckResponse
        return await self._grpc_unary(grpc_context, "health", empty, status, authenticate=False)

    async def Watch(self, request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        """``grpc.health.v1.Health/Watch``: the status now, then each change, until cancelled."""
        last = None
        while True:
            status = self._health_status()
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(HEALTH_WATCH_POLL_S)

    # -- nvidia.riva.asr.RivaSpeechRecognition ---------------------------------------------

    async def StreamingRecognize(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        """``StreamingRecognize``: live recognition, config first, then audio (``riva.recognition``)."""

        def build(stream: GrpcStream) -> GrpcSession:
            vad = self._vad.stream()  # type: ignore[attr-defined]
            models, batcher = self._models, self._vad_batcher  # type: ignore[attr-defined]
            return RivaStreamingRecognition(self._config, models, vad, stream.emit, batcher)

        async for message in self._grpc_stream(request_stream, grpc_context, "riva_asr", build):
            yield message

    async def Recognize(self, request: Any, grpc_context: Any = None) -> Any:
        """``Recognize``: a whole recording in one request, one result per utterance."""

        async def reply() -> Any:
            vad = self._vad.stream()  # type: ignore[attr-defined]
            models, batcher = self._models, self._vad_batcher  # type: ignore[attr-defined]
            return await recognize(self._config, models, vad, request, batcher)

        empty = riva_asr_pb2.RecognizeResponse
        return await self._grpc_unary(grpc_context, "riva_asr", empty, reply)

    async def GetRivaSpeechRecognitionConfig(self, request: Any, grpc_context: Any = None) -> Any:
        """``GetRivaSpeechRecognitionConfig``: the ASR model, as ``--list-models`` reads it."""

        async def reply() -> Any:
            return recognition_config(self._config, request.model_name)

        empty = riva_asr_pb2.RivaSpeechRecognitionConfigResponse
        return await self._grpc_unary(grpc_context, "riva_asr", empty, reply)

    # -- nvidia.riva.tts.RivaSpeechSynthesis -----------------------------------------------

    async def Synthesize(self, request: Any, grpc_context: Any = None) -> Any:
        """``Synthesize``: the whole audio of one text in one response (``riva.synthesis``)."""

        async def reply() -> Any:
            return await synthesize(request, self._config, self._models)  # type: ignore[attr-defined]

        empty = riva_tts_pb2.SynthesizeSpeechResponse
        return await self._grpc_unary(grpc_context, "riva_tts", empty, reply)

    async def SynthesizeOnline(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        """``SynthesizeOnline``: audio streamed per text; bidi (client >= 2.25) and one-request calls."""

        def build(stream: GrpcStream) -> GrpcSession:
            return RivaStreamingSynthesis(self._config, self._models, stream.emit)  # type: ignore[attr-defined]

        async for message in self._grpc_stream(request_stream, grpc_context, "riva_tts", build):
            yield message

    async def GetRivaSynthesisConfig(self, request: Any, grpc_context: Any = None) -> Any:
        """``GetRivaSynthesisConfig``: the voices, as ``talk.py --list-voices`` reads them."""

        async def reply() -> Any:
            return synthesis_config(self._config, request)

        empty = riva_tts_pb2.RivaSynthesisConfigResponse
        return await self._grpc_unary(grpc_context, "riva_tts", empty, reply)

    # -- voice_workflow.VoiceGateway and voxray.voice.v1.VoxrayVoice -----------------------

    async def _voice_stream(
        self, session: type[VoiceStreamSession], requests: Any, context: Any
    ) -> AsyncIterator[Message]:
        """Run one voice conversation of type ``session`` over a stream (``voice_grpc``)."""

        def build(stream: GrpcStream) -> GrpcSession:
            return session(
                self._config,
                self._models,  # type: ignore[attr-defined]
                self._vad.stream(),  # type: ignore[attr-defined]
                stream.emit,
                self._vad_batcher,  # type: ignore[attr-defined]
                stream.withdraw,
            )

        async for message in self._grpc_stream(requests, context, session.protocol, build):
            yield message

    async def StreamAudio(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        """``voice_workflow.VoiceGateway/StreamAudio``: seed 002's voice-to-voice stream."""
        async for message in self._voice_stream(VoiceGatewaySession, request_stream, grpc_context):
            yield message

    async def Converse(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        """``voxray.voice.v1.VoxrayVoice/Converse``: voxray's own voice-to-voice stream."""
        async for message in self._voice_stream(ConverseSession, request_stream, grpc_context):
            yield message
