"""``POST /v1/realtime/client_secrets``: short-lived secrets for browsers, as OpenAI's GA API.

A browser must not hold an API key. The page's own backend calls this endpoint with the
key, gets a secret (``ek_...``) valid for one session within ``expires_after.seconds``
(default ``auth.client_secret_ttl_s``), and hands it to the page, which connects with the
``openai-insecure-api-key.<secret>`` subprotocol. A ``session`` object in the request is
validated now and applied when the session starts, so the page cannot change what its
backend chose until it connects.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from serve_app.config import AppConfig
from serve_app.protocols.realtime import wire as rt
from serve_app.protocols.realtime.items import check_text_length, session_preset
from serve_app.server.access import CLIENT_SECRET_PREFIX, bearer_token
from serve_app.server.access_registry import ClientSecret
from serve_app.server.limits import CloseConnection

MAX_BODY_BYTES = 256 << 10


class ExpiresAfter(BaseModel):
    """When the secret expires, counted from its creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(default=600, ge=10, le=7200)


class ClientSecretRequest(BaseModel):
    """The request body (all optional)."""

    model_config = ConfigDict(extra="forbid")

    expires_after: ExpiresAfter | None = None
    session: dict[str, Any] | None = None


def _error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


async def client_secret_response(
    request: Request, admission: Any, registry: Any, config: AppConfig
) -> JSONResponse:
    """Authenticate the request with an API key, validate it, and mint a secret.

    Returns:
        200 with ``{"value", "expires_at", "session"}``; 401 for a missing or wrong key
        (client secrets cannot mint more secrets); 400 for a bad body.
    """
    try:
        admission.check_origin(request)
        token = bearer_token(request.headers)
        if token is not None and token.startswith(CLIENT_SECRET_PREFIX):
            return _error(401, "invalid_api_key", "A client secret cannot mint client secrets.")
        kid = admission.check_api_key(request, token)
    except CloseConnection as refused:
        error = refused.error["error"]
        return _error(403 if error["code"] == "origin_not_allowed" else 401, error["code"], error["message"])
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(400, "message_too_large", f"Request body exceeds {MAX_BODY_BYTES} bytes.")
    try:
        parsed = ClientSecretRequest.model_validate(json.loads(body) if body.strip() else {})
    except (ValueError, ValidationError) as exc:
        param = None
        if isinstance(exc, ValidationError) and exc.errors():
            param = ".".join(str(p) for p in exc.errors()[0]["loc"])
        return _error(400, "invalid_request", f"Invalid request body: {exc}".splitlines()[0][:500], param)
    state = rt.SessionState.from_defaults(rt.new_id("sess"), config.session)
    if parsed.session is not None:
        try:
            preset = session_preset(parsed.session)
            check_text_length(preset.session.instructions, "session.instructions", config.limits, None)
            state.apply_update(preset)
        except rt.ProtocolError as exc:
            return _error(400, exc.code, exc.message, exc.param)
    ttl = parsed.expires_after.seconds if parsed.expires_after else config.auth.client_secret_ttl_s
    secret: ClientSecret = await registry.mint.remote(kid, float(ttl), parsed.session)
    return JSONResponse({"value": secret.value, "expires_at": secret.expires_at, "session": state.to_wire()})
