"""The Ingress deployment: FastAPI routes and the ``/v1/realtime`` WebSocket.

(No ``from __future__ import annotations`` here: FastAPI must see real ``WebSocket`` and
``Request`` annotations on the routes, or it treats them as query parameters.)

Each connection is admitted (origin, credentials, capacity: see ``serve_app.server.access``)
before any model work, then gets one ``Session`` run by a ``Connection``. Model work goes
to the ASR, LLM and TTS deployments through their handles. A once-a-second sweep ends
connections that break a limit, use a revoked key, or outlive this replica's shutdown.
"""

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from ray import serve

from deployments.logs import attach_to_serve_logs
from deployments.models import resolve_model
from serve_app.config import AppConfig
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.audio.vad_batch import VADBatcher
from serve_app.engine.model_clients import HandleASR, HandleLLM, HandleSpeaker, HandleTTS, ModelClients
from serve_app.observability import metrics
from serve_app.protocols.flow.adapter import FlowSession, flow_refusal
from serve_app.protocols.grpc_api.servicer import GrpcServicer
from serve_app.protocols.realtime.adapter import RealtimeSession, realtime_refusal
from serve_app.protocols.realtime.transcription import TranscriptionSession
from serve_app.protocols.speechmatics_rt.adapter import RTSession, rt_refusal
from serve_app.server.access import APIKeys, handshake_credentials
from serve_app.server.access_registry import LEASE_RENEW_S
from serve_app.server.admission import Admission, check_exposure, serve_http_host
from serve_app.server.chat_completions import chat_completion_response, models_response
from serve_app.server.client_secrets import client_secret_response
from serve_app.server.connection import Connection, WireSession
from serve_app.server.drain import replica_drain, server_restarting
from serve_app.server.limits import POLICY_VIOLATION, TRY_AGAIN_LATER, CloseConnection
from serve_app.server.readiness import ReadinessCheck, readiness_report
from serve_app.server.web_page import asset, page

logger = logging.getLogger("voxray")

PROTOCOLS = (
    "realtime",
    "flow",
    "speechmatics_rt",
    "riva_asr",
    "riva_tts",
    "voice_gateway",
    "voxray_voice",
)  # the wire protocols served, the sessions gauge's label values

api = FastAPI(title="voxray", description="Voice-to-voice AI over the OpenAI Realtime API")

SWEEP_S = 1.0


def access_unavailable() -> CloseConnection:
    """The refusal when the AccessRegistry cannot be reached (a new one: event ids are unique)."""
    return CloseConnection(
        TRY_AGAIN_LATER,
        "access_check_unavailable",
        "The server could not check this connection's credentials right now; try again shortly.",
        reason="access check unavailable; try again later",
        error_type="server_error",
    )


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1000)
@serve.ingress(api)
class Ingress(GrpcServicer):
    """Admits WebSockets and gRPC streams and runs one protocol session for each.

    The gRPC methods (Riva, VoiceGateway, health) come from ``GrpcServicer``.
    """

    def __init__(
        self, config: dict[str, Any], asr: Any, llm: Any, tts: Any, registry: Any, speaker: Any = None
    ) -> None:
        attach_to_serve_logs()
        self._config = AppConfig.model_validate(config)
        self._models = ModelClients(
            HandleASR(asr),
            HandleLLM(llm),
            HandleTTS(tts),
            HandleSpeaker(speaker) if speaker is not None else None,
        )
        self._readiness = ReadinessCheck(self._models)
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._vad = SileroVAD(resolve_model(self._config.vad.model))
        self._vad_batcher = VADBatcher(self._vad)  # one Silero call per loop turn for all sessions
        self._keys = APIKeys(self._config.auth)
        self._admission = Admission(self._config, self._keys, registry)
        self._registry = registry
        self._connections: dict[str, Connection] = {}
        self._refused: collections.Counter[str] = collections.Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self._drain = replica_drain()
        check_exposure(self._config.auth, self._keys.configured, serve_http_host)
        self._record_sessions()

    @api.get("/", include_in_schema=False)
    async def index(self) -> Response:
        """The browser client: talk to voxray from a web page."""
        return page()

    @api.get("/transcribe", include_in_schema=False)
    async def transcribe_page(self) -> Response:
        """The live captions page: transcribe the microphone or a dropped file (``/v2``)."""
        return page("transcribe.html")

    @api.get("/web/{name}", include_in_schema=False)
    async def web_asset(self, name: str) -> Response:
        """The browser client's scripts and style."""
        return asset(name)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the process is up. Reports live sessions and refused handshakes by reason."""
        return self._health()

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: 200 when the ASR, LLM and TTS models each answer a tiny request.

        503 when one fails or is slow (the body says which and why), and at once on a
        draining replica, which takes no new sessions.
        """
        status, body = await readiness_report(self._readiness, self._draining(), len(self._connections))
        return JSONResponse(body, status_code=status)

    def stats(self) -> dict[str, Any]:
        """For tests and benchmarks (through a handle, not HTTP): process id, sessions, queues."""
        queued = sum(c.queued_bytes for c in self._connections.values())
        return {**self._health(), "pid": os.getpid(), "outbound_queued_bytes": queued}

    def _draining(self) -> bool:
        return self._drain is not None and self._drain.draining(time.monotonic())

    def _health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "sessions": len(self._connections),
            "draining": self._draining(),
            "refused": dict(self._refused),
        }

    def _record_sessions(self) -> None:
        for protocol in PROTOCOLS:
            live = sum(1 for c in self._connections.values() if c.session and c.session.protocol == protocol)
            metrics.record("voxray_sessions_active", live, replica=self._replica, protocol=protocol)

    @api.post("/v1/realtime/client_secrets")
    async def client_secrets(self, request: Request) -> JSONResponse:
        """Mint a short-lived, single-use client secret for a browser (OpenAI's GA endpoint)."""
        return await client_secret_response(request, self._admission, self._registry, self._config)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """OpenAI's Chat Completions on the LLM deployment (streamed as server-sent events if asked)."""
        return await chat_completion_response(
            request, self._config, self._models.llm, self._admission, self._draining()
        )

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        """OpenAI's model list: the one LLM model these chat completions are served by."""
        return models_response(request, self._config, self._admission, self._draining())

    @api.websocket("/v1/realtime")
    async def realtime(self, websocket: WebSocket) -> None:
        """One OpenAI Realtime conversation (the ``model`` query parameter is accepted and ignored).

        ``?intent=transcription`` makes it a transcription session: live transcripts, no replies.
        """
        transcription = websocket.query_params.get("intent") == "transcription"

        def build(connection: Connection) -> RealtimeSession | TranscriptionSession:
            if transcription:
                return TranscriptionSession(
                    self._config, self._models, self._vad.stream(), connection.emit, self._vad_batcher
                )
            return RealtimeSession(
                self._config, self._models, self._vad.stream(), connection.emit, vad_batcher=self._vad_batcher
            )

        await self._serve(websocket, build, realtime_refusal)

    @api.websocket("/v1/flow")
    async def flow(self, websocket: WebSocket) -> None:
        """One Speechmatics Flow conversation (the ``speechmatics-flow`` client's protocol)."""

        def build(connection: Connection) -> FlowSession:
            return FlowSession(
                self._config,
                self._models,
                self._vad.stream(),
                connection.emit,
                connection.send_bytes,
                connection.end_soon,
                vad_batcher=self._vad_batcher,
            )

        await self._serve(websocket, build, flow_refusal)

    @api.websocket("/v2")
    async def speechmatics_rt(self, websocket: WebSocket) -> None:
        """One Speechmatics real-time transcription session (``speechmatics rt``, ``speechmatics-rt``)."""
        await self._serve_rt(websocket, None)

    @api.websocket("/v2/{language}")
    async def speechmatics_rt_language(self, websocket: WebSocket, language: str) -> None:
        """The same, with the language in the path (the legacy CLI appends ``/<lang>``)."""
        await self._serve_rt(websocket, language)

    async def _serve_rt(self, websocket: WebSocket, language: str | None) -> None:
        def build(connection: Connection) -> RTSession:
            return RTSession(
                self._config,
                self._models,
                self._vad.stream(),
                connection.emit,
                connection.end_soon,
                path_language=language,
                vad_batcher=self._vad_batcher,
            )

        await self._serve(websocket, build, rt_refusal)

    async def _serve(
        self,
        websocket: WebSocket,
        build: Callable[[Connection], WireSession],
        refusal: Callable[[CloseConnection], list[dict[str, Any]]],
    ) -> None:
        """Admit one WebSocket and run the protocol session ``build`` makes for it.

        Every protocol shares this: origin and credential checks, capacity, per-key limits,
        drains and the sweep. ``refusal`` renders a refused handshake in the protocol's words.
        """
        self._start_sweeper()
        credentials = handshake_credentials(websocket.headers, websocket.scope.get("subprotocols") or [])
        await websocket.accept(subprotocol=credentials.subprotocol)
        connection = Connection(websocket, self._config.limits)
        session = build(connection)
        connection.session = session
        try:
            if self._draining():
                raise server_restarting()  # routed here just before the router saw the drain
            admitted = await self._admission.admit(websocket, credentials)
            await self._reserve(session.id, admitted.key_id)
        except CloseConnection as refused:
            await self._refuse(websocket, refused, session.protocol, refusal)
            return
        except Exception:  # the AccessRegistry is unreachable (restarting): fail closed, retryably
            logger.exception("access check failed")
            await self._refuse(websocket, access_unavailable(), session.protocol, refusal)
            return
        connection.key_id = admitted.key_id
        async with self._holding(session.id, connection, session.protocol):
            await connection.run(session, admitted.session_preset)

    async def _reserve(self, session_id: str, key_id: str | None) -> None:
        """Take a place for a new session: this replica's capacity, then its key's limit.

        Raises:
            CloseConnection: ``session_limit_reached`` (for the replica or the key).
        """
        self._check_capacity()
        if not await self._take_key_slot(session_id, key_id):
            raise self._key_limit_refusal()

    @contextlib.asynccontextmanager
    async def _holding(self, session_id: str, connection: Any, protocol: str) -> AsyncIterator[None]:
        """Count ``connection`` (a WebSocket's or a gRPC stream's) as live while the block runs.

        Live sessions are swept (limits, revoked keys, drains), counted in metrics and
        capacity, and release their key's slot when they end.
        """
        self._connections[session_id] = connection
        self._record_sessions()
        metrics.count("voxray_sessions_opened", protocol=protocol)
        logger.info(
            "%s session %s opened (%d live, key %s)",
            protocol,
            session_id,
            len(self._connections),
            connection.key_id,
        )
        try:
            yield
        finally:
            del self._connections[session_id]
            self._record_sessions()
            if connection.key_id is not None and self._config.limits.max_sessions_per_key is not None:
                with contextlib.suppress(Exception):
                    await self._registry.release.remote(session_id)
            closing = connection.closing
            logger.info(
                "session %s closed (%d live)%s",
                session_id,
                len(self._connections),
                f": {closing.code} {closing.reason}" if closing else "",
            )

    def _check_capacity(self) -> None:
        limit = self._config.limits.max_sessions_per_replica
        if len(self._connections) >= limit:
            raise CloseConnection(
                TRY_AGAIN_LATER,
                "session_limit_reached",
                f"This server is at capacity ({limit} sessions); try again later.",
                reason="server at capacity; try again later",
                error_type="server_error",
            )

    async def _take_key_slot(self, session_id: str, key_id: str | None) -> bool:
        limit = self._config.limits.max_sessions_per_key
        if limit is None or key_id is None:
            return True
        replica = serve.get_replica_context().replica_id.unique_id
        return await self._registry.acquire.remote(key_id, session_id, replica, limit)

    def _key_limit_refusal(self) -> CloseConnection:
        limit = self._config.limits.max_sessions_per_key
        return CloseConnection(
            TRY_AGAIN_LATER,
            "session_limit_reached",
            f"This API key already has {limit} live sessions; close one or try again later.",
            reason="too many sessions for this API key",
        )

    async def _refuse(
        self,
        websocket: WebSocket,
        refused: CloseConnection,
        protocol: str,
        refusal: Callable[[CloseConnection], list[dict[str, Any]]],
    ) -> None:
        """Tell the client why, in its protocol's words, then close: nothing was started."""
        reason = refused.error_code
        self._refused[reason] += 1
        metrics.count("voxray_connections_rejected", reason=reason, protocol=protocol)
        logger.info("refused a %s connection: %s", protocol, refused.reason)
        with contextlib.suppress(Exception):
            for message in refusal(refused):
                await websocket.send_json(message)
            await websocket.close(refused.code, refused.reason)

    # -- the sweep ---------------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="voxray-sweeper")

    async def _sweep_forever(self) -> None:
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                self._sweep(time.monotonic())
                if time.monotonic() - last_renewal >= LEASE_RENEW_S:
                    last_renewal = time.monotonic()
                    await self._renew_leases()
            except Exception:  # the sweep must outlive any one bad round
                logger.exception("connection sweep failed")

    def _sweep(self, now: float) -> None:
        """End connections over a limit, on a revoked key, or outliving a draining replica."""
        if self._drain is not None and self._connections and self._drain.sessions_must_end(now):
            logger.info("replica draining: ending %d sessions before it stops", len(self._connections))
            for connection in self._connections.values():
                connection.end(server_restarting())
            return
        valid_keys = self._keys.valid_ids() if self._keys.configured else None
        for connection in self._connections.values():
            if valid_keys is not None and connection.key_id not in (None, *valid_keys):
                revoked = CloseConnection(POLICY_VIOLATION, "api_key_revoked", "This API key was revoked.")
                connection.end(revoked)
                continue
            over = connection.check(now)
            if over is not None:
                connection.end(over)

    async def _renew_leases(self) -> None:
        if self._config.limits.max_sessions_per_key is None:
            return
        held = {sid: c.key_id for sid, c in self._connections.items() if c.key_id is not None}
        if held:
            replica = serve.get_replica_context().replica_id.unique_id
            await self._registry.renew.remote(replica, held)
