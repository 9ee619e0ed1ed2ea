"""Admitting a WebSocket: origin, then credentials, before anything else runs for it.

The order matters: a browser page from a foreign origin is refused before its key is even
looked at, and nothing about capacity or models is revealed to unauthenticated clients.
Also here: the host the surrounding Serve instance binds to, read through Ray internals
and degrading to ``None`` when those change (the replica's drain is ``serve_app.server.drain``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from deployments import ray_compat
from serve_app.config import AppConfig, AuthConfig
from serve_app.server.access import APIKeys, Credentials, is_loopback, origin_allowed, refusal
from serve_app.server.access_registry import Redemption

logger = logging.getLogger("voxray")


@dataclass(frozen=True)
class Admitted:
    """Who a connection belongs to.

    Attributes:
        key_id: The API key it authenticated with (directly or through a client secret);
            ``None`` when no keys are configured.
        session_preset: The ``session`` object of the client secret it used, if any.
    """

    key_id: str | None = None
    session_preset: dict[str, Any] | None = None


class Admission:
    """Decides whether a handshake or an HTTP request may proceed.

    Args:
        config: The app config (``auth``).
        keys: The configured API keys.
        registry: Handle of the ``AccessRegistry`` deployment (client secrets).
    """

    def __init__(self, config: AppConfig, keys: APIKeys, registry: Any) -> None:
        self._auth = config.auth
        self._keys = keys
        self._registry = registry

    def check_origin(self, connection: HTTPConnection) -> None:
        """Refuse browser pages from origins not on the allow-list.

        Raises:
            CloseConnection: ``origin_not_allowed``.
        """
        origin = connection.headers.get("origin")
        if not origin_allowed(origin, self._auth.allowed_origins, self._keys.configured):
            raise refusal("origin_not_allowed", f"Connections from origin {origin[:200]!r} are not allowed.")

    def check_api_key(self, connection: HTTPConnection, token: str | None) -> str | None:
        """Authenticate with an API key (not a client secret); returns its key id.

        With no keys configured, loopback clients pass (``None``) and others are refused,
        unless ``auth.allow_unauthenticated``.

        Raises:
            CloseConnection: ``missing_api_key``, ``invalid_api_key`` or ``loopback_only``.
        """
        return self.check_key(connection.client.host if connection.client else None, token)

    def check_key(self, client_host: str | None, token: str | None) -> str | None:
        """:meth:`check_api_key` for any transport: ``client_host`` is the peer's address.

        Raises:
            CloseConnection: ``missing_api_key``, ``invalid_api_key`` or ``loopback_only``.
        """
        if not self._keys.configured:
            if not self._auth.allow_unauthenticated and not is_loopback(client_host):
                raise refusal(
                    "loopback_only",
                    "This voxray server has no API keys configured and serves only its own machine.",
                )
            return None
        if not token:
            raise refusal(
                "missing_api_key",
                "You didn't provide an API key. Send 'Authorization: Bearer <key>' or the "
                "'openai-insecure-api-key.<key>' subprotocol.",
            )
        kid = self._keys.match(token)
        if kid is None:
            raise refusal("invalid_api_key", "Incorrect API key provided.")
        return kid

    async def admit(self, connection: HTTPConnection, credentials: Credentials) -> Admitted:
        """Admit a WebSocket handshake.

        Raises:
            CloseConnection: 1008 with the reason; the caller sends it and closes.
        """
        self.check_origin(connection)
        if not credentials.is_client_secret:
            return Admitted(key_id=self.check_api_key(connection, credentials.token))
        redemption: Redemption = await self._registry.redeem.remote(credentials.token)
        if redemption.status == "expired":
            raise refusal("client_secret_expired", "This client secret has expired; request a new one.")
        if redemption.status == "used":
            raise refusal("client_secret_used", "This client secret was already used for a session.")
        if redemption.status != "ok":
            raise refusal("invalid_client_secret", "Unknown client secret.")
        if redemption.key_id is None:
            # Minted without a key: valid only where no key is needed, under the same rules.
            if self._keys.configured:
                raise refusal("invalid_client_secret", "This client secret was made without an API key.")
            self.check_api_key(connection, None)
        elif not self._keys.is_valid_id(redemption.key_id):
            raise refusal("invalid_api_key", "The API key this client secret was made with was revoked.")
        return Admitted(key_id=redemption.key_id, session_preset=redemption.session)


def check_exposure(auth: AuthConfig, keys_configured: bool, http_host: Callable[[], str | None]) -> None:
    """Refuse to serve without keys on a non-loopback address; log what is served.

    Args:
        auth: The ``auth`` config.
        keys_configured: Whether API keys are configured.
        http_host: Returns the address Serve listens on (``None``: unknown; then only the
            per-connection loopback check protects the server).

    Raises:
        RuntimeError: No keys, not ``allow_unauthenticated``, and a non-loopback host.
    """
    if keys_configured:
        logger.info("API keys configured: every session must present a key or a client secret")
        return
    if auth.allow_unauthenticated:
        logger.warning("auth.allow_unauthenticated: serving everyone without keys")
        return
    host = http_host()
    if host is not None and not is_loopback(host):
        raise RuntimeError(
            f"voxray has no API key configured but Serve listens on {host!r}. Set keys "
            f"(env {auth.api_keys_env or 'auth.api_keys_env'}, auth.api_keys_file or auth.api_keys), "
            "bind http_options.host to 127.0.0.1, or set auth.allow_unauthenticated behind your "
            "own gateway."
        )
    logger.warning("no API key configured: serving loopback clients only")


def serve_http_host() -> str | None:
    """The host Serve's HTTP proxy binds to, or ``None`` if it cannot be read."""
    try:
        return ray_compat.serve_http_host()
    except Exception as exc:  # an internal API: never let it stop the server
        logger.warning("could not read Serve's HTTP host (%s); relying on client addresses", exc)
        return None
