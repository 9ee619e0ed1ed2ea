"""The Ingress deployment: FastAPI routes and the ``/v1/realtime`` WebSocket.

(No ``from __future__ import annotations`` here: FastAPI must see real ``WebSocket``
annotations on the routes, or it treats the socket as a query parameter and refuses it.)

Each connection gets one ``Session``; model work goes to the ASR, LLM and TTS deployments
through their handles. Outgoing events go through one bounded queue and a single writer
task, so events from concurrent tasks keep their order and a slow client applies
back-pressure instead of growing memory without bound.
"""

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve
from starlette.websockets import WebSocketState

from deployments.models import resolve_model
from serve_app.config import AppConfig
from serve_app.model_clients import HandleASR, HandleLLM, HandleTTS, ModelClients
from serve_app.session import Session
from serve_app.vad import SileroVAD
from serve_app.vad_batch import VADBatcher

logger = logging.getLogger("voxray")

api = FastAPI(title="voxray", description="Voice-to-voice AI over the OpenAI Realtime API")

OUTBOUND_QUEUE_EVENTS = 256


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1000)
@serve.ingress(api)
class Ingress:
    """Accepts Realtime WebSockets and runs one Session per connection."""

    def __init__(self, config: dict[str, Any], asr: Any, llm: Any, tts: Any) -> None:
        self._config = AppConfig.model_validate(config)
        self._models = ModelClients(HandleASR(asr), HandleLLM(llm), HandleTTS(tts))
        self._vad = SileroVAD(resolve_model(self._config.vad.model))
        self._vad_batcher = VADBatcher(self._vad)  # one Silero call per loop turn for all sessions
        self._sessions: set[Session] = set()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the process is up. Reports the number of live sessions."""
        return {"status": "ok", "sessions": len(self._sessions)}

    @api.websocket("/v1/realtime")
    async def realtime(self, websocket: WebSocket) -> None:
        """One OpenAI Realtime conversation (the ``model`` query parameter is accepted and ignored)."""
        # Browsers following OpenAI's docs offer the "realtime" subprotocol and must get it back.
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        outbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=OUTBOUND_QUEUE_EVENTS)
        writer = asyncio.create_task(self._write_events(websocket, outbound))
        session = Session(
            self._config, self._models, self._vad.stream(), outbound.put, vad_batcher=self._vad_batcher
        )
        self._sessions.add(session)
        logger.info("session %s opened (%d live)", session.id, len(self._sessions))
        try:
            await session.start()
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                await session.handle_message(data if data is not None else message.get("bytes") or b"")
                if writer.done():
                    break  # the client stopped reading or the socket broke
        except WebSocketDisconnect:
            pass
        finally:
            self._sessions.discard(session)
            await session.close()
            await self._drain(outbound, writer)
            if websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()
            logger.info("session %s closed (%d live)", session.id, len(self._sessions))

    @staticmethod
    async def _write_events(websocket: WebSocket, outbound: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await outbound.get()
            await websocket.send_text(json.dumps(event))

    @staticmethod
    async def _drain(outbound: asyncio.Queue[dict[str, Any]], writer: asyncio.Task[None]) -> None:
        """Give queued events a moment to go out, then stop the writer."""
        with contextlib.suppress(Exception):
            for _ in range(50):
                if outbound.empty() or writer.done():
                    break
                await asyncio.sleep(0.01)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
