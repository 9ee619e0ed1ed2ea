"""Who may open a session: API keys, client secrets and browser origins, checked on the handshake.

Credentials come the ways OpenAI's clients send them: an ``Authorization: Bearer <key>``
header (server SDKs), or a ``openai-insecure-api-key.<key>`` WebSocket subprotocol
(browsers, which cannot set headers on a WebSocket). The presented value is an API key or
a short-lived client secret (``ek_...``) minted by ``POST /v1/realtime/client_secrets``.

Keys never appear in logs or errors: a key is named by its :func:`key_id`, a hash prefix.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from serve_app.config import AuthConfig
from serve_app.server.limits import POLICY_VIOLATION, CloseConnection

logger = logging.getLogger("voxray")

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
CLIENT_SECRET_PREFIX = "ek_"
LOOPBACK_ORIGIN_PATTERNS = (
    "http://localhost",
    "http://localhost:*",
    "http://127.0.0.1",
    "http://127.0.0.1:*",
    "http://[[]::1]",
    "http://[[]::1]:*",
)


def key_id(key: str) -> str:
    """A stable, non-secret name for an API key (for logs, limits and client secrets)."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is this machine."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class APIKeys:
    """The configured API keys, from the config, an environment variable and a file.

    The file is re-read whenever its modification time changes, so a key removed from a
    mounted Kubernetes Secret stops working without restarting anything.

    Args:
        config: The ``auth`` section of the app config.
        environ: Where ``config.api_keys_env`` is looked up.
    """

    def __init__(self, config: AuthConfig, environ: Mapping[str, str] = os.environ) -> None:
        fixed = list(config.api_keys)
        if config.api_keys_env:
            fixed += environ.get(config.api_keys_env, "").split(",")
        self._fixed = _usable_keys(fixed, "the config and environment")
        self._file = Path(config.api_keys_file) if config.api_keys_file else None
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_keys: list[str] = []
        self._load_file()

    def _load_file(self) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            if self._file_keys:
                logger.warning("API key file %s is gone: its keys are revoked", self._file)
            self._file_stamp, self._file_keys = None, []
            return
        # The inode too: a Kubernetes Secret volume swaps in a new file on every update.
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._file_stamp:
            return
        lines = [line.strip() for line in self._file.read_text().splitlines()]
        self._file_keys = _usable_keys([line for line in lines if not line.startswith("#")], str(self._file))
        self._file_stamp = stamp
        logger.info("loaded %d API key(s) from %s", len(self._file_keys), self._file)

    def _all(self) -> list[str]:
        self._load_file()
        return self._fixed + self._file_keys

    @property
    def configured(self) -> bool:
        """Whether any key is configured (a configured but missing key file counts)."""
        return bool(self._fixed) or self._file is not None

    def match(self, presented: str) -> str | None:
        """The :func:`key_id` of the configured key equal to ``presented``, else ``None``.

        Every key is compared in constant time, so timing does not reveal a near miss.
        """
        found = None
        for key in self._all():
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = key_id(key)
        return found

    def valid_ids(self) -> set[str]:
        """The key ids of all configured keys (re-reading the key file if it changed)."""
        return {key_id(key) for key in self._all()}

    def is_valid_id(self, kid: str) -> bool:
        """Whether the key named ``kid`` is still configured (not revoked)."""
        return kid in self.valid_ids()


def _usable_keys(candidates: list[str], source: str) -> list[str]:
    """Stripped, non-empty keys; ``ek_`` keys are skipped (that prefix marks client secrets)."""
    keys = [k.strip() for k in candidates if k.strip()]
    for key in keys:
        if key.startswith(CLIENT_SECRET_PREFIX):
            logger.warning(
                "ignoring an API key from %s: keys must not start with %r", source, CLIENT_SECRET_PREFIX
            )
    return [k for k in keys if not k.startswith(CLIENT_SECRET_PREFIX)]


@dataclass(frozen=True)
class Credentials:
    """What a handshake presented.

    Attributes:
        token: The API key or client secret, if any.
        source: ``header`` or ``subprotocol``.
        subprotocol: The subprotocol to answer with (never the key-carrying one).
    """

    token: str | None
    source: str | None
    subprotocol: str | None

    @property
    def is_client_secret(self) -> bool:
        """Whether the token is a client secret rather than an API key."""
        return self.token is not None and self.token.startswith(CLIENT_SECRET_PREFIX)


def handshake_credentials(headers: Mapping[str, str], subprotocols: Sequence[str]) -> Credentials:
    """Read the credentials of a WebSocket handshake.

    Args:
        headers: The request headers (case-insensitive mapping, as Starlette's).
        subprotocols: The offered ``Sec-WebSocket-Protocol`` values.
    """
    token = bearer_token(headers)
    source = "header" if token is not None else None
    plain = []
    for offered in subprotocols:
        if offered.startswith(KEY_SUBPROTOCOL_PREFIX):
            if token is None and offered[len(KEY_SUBPROTOCOL_PREFIX) :]:
                token, source = offered[len(KEY_SUBPROTOCOL_PREFIX) :], "subprotocol"
        else:
            plain.append(offered)
    # A browser fails the handshake unless the server picks one of the offered subprotocols.
    chosen = "realtime" if "realtime" in plain else (plain[0] if plain else None)
    return Credentials(token, source, chosen)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization: Bearer`` value of an HTTP request, if any."""
    auth = headers.get("authorization", "")
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


def origin_allowed(origin: str | None, patterns: Sequence[str] | None, keys_configured: bool) -> bool:
    """Whether a browser page at ``origin`` may connect.

    Requests without an ``Origin`` header do not come from a browser page and pass; the
    keys (or loopback-only serving) protect against those.

    Args:
        origin: The ``Origin`` request header.
        patterns: ``auth.allowed_origins``; ``None`` means the default described there.
        keys_configured: Whether API keys guard the server.
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if patterns is None:
        if keys_configured:
            return True
        patterns = LOOPBACK_ORIGIN_PATTERNS
    return any(fnmatch.fnmatchcase(origin, p.strip().lower().rstrip("/")) for p in patterns)


def refusal(code: str, message: str) -> CloseConnection:
    """A handshake refusal: an ``error`` event with ``code``, then close code 1008."""
    return CloseConnection(POLICY_VIOLATION, code, message)
