"""State that all Ingress replicas share: client secrets and per-key session leases.

A client secret is minted by one Ingress replica and may be redeemed on another, and a
per-key session limit counts sessions on every replica, so this state lives in one small
deployment (one replica, no CPU reservation). Only secrets' hashes are kept. If the replica
restarts, outstanding secrets are forgotten (clients mint new ones: they live minutes) and
leases rebuild themselves from the Ingress replicas' next renewal.

Leases, not counters: an Ingress replica that dies cannot release its sessions, so each
lease expires unless its replica renews it (every ``LEASE_RENEW_S``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel
from ray import serve

from serve_app.server.access import CLIENT_SECRET_PREFIX

LEASE_TTL_S = 30.0
LEASE_RENEW_S = 10.0


class ClientSecret(BaseModel):
    """A minted secret, as ``POST /v1/realtime/client_secrets`` returns it (the value once)."""

    value: str
    expires_at: int


class Redemption(BaseModel):
    """The result of presenting a client secret on a handshake.

    Attributes:
        status: ``ok``, or why it was refused.
        key_id: The API key the secret was minted with (its limits and revocation apply).
        session: The ``session`` object the secret was minted with, applied at start.
    """

    status: Literal["ok", "unknown", "expired", "used"]
    key_id: str | None = None
    session: dict[str, Any] | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@serve.deployment(
    name="AccessRegistry",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=1000,
)
class AccessRegistry:
    """Client secrets (single use, expiring) and per-API-key session leases."""

    def __init__(self) -> None:
        # digest -> (key_id, expires_at (unix s), session preset, used)
        self._secrets: dict[str, tuple[str, float, dict[str, Any] | None, bool]] = {}
        # session id -> (key_id, replica id, lease expiry (monotonic s))
        self._leases: dict[str, tuple[str, str, float]] = {}

    def mint(self, key_id: str, ttl_s: float, session: dict[str, Any] | None) -> ClientSecret:
        """Create a client secret valid for one session within ``ttl_s`` seconds."""
        self._forget_expired()
        value = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
        expires_at = time.time() + ttl_s
        self._secrets[_digest(value)] = (key_id, expires_at, session, False)
        return ClientSecret(value=value, expires_at=int(expires_at))

    def redeem(self, value: str) -> Redemption:
        """Use up a client secret; it is never valid again, whatever the result."""
        record = self._secrets.get(_digest(value))
        if record is None:
            return Redemption(status="unknown")
        kid, expires_at, session, used = record
        if used:
            return Redemption(status="used", key_id=kid)
        self._secrets[_digest(value)] = (kid, expires_at, session, True)
        if time.time() >= expires_at:
            return Redemption(status="expired", key_id=kid)
        return Redemption(status="ok", key_id=kid, session=session)

    def acquire(self, key_id: str, session_id: str, replica_id: str, limit: int) -> bool:
        """Take one of ``key_id``'s ``limit`` session slots for ``session_id``, if one is free."""
        if self.sessions_of(key_id) >= limit:
            return False
        self._leases[session_id] = (key_id, replica_id, time.monotonic() + LEASE_TTL_S)
        return True

    def renew(self, replica_id: str, session_ids: dict[str, str]) -> None:
        """Extend the leases of a replica's live sessions (``session id -> key id``).

        Sessions unknown here (the registry restarted) get their lease back, so limits hold
        again after one renewal round.
        """
        until = time.monotonic() + LEASE_TTL_S
        for session_id, kid in session_ids.items():
            self._leases[session_id] = (kid, replica_id, until)

    def release(self, session_id: str) -> None:
        """Give back a session's slot (the session ended)."""
        self._leases.pop(session_id, None)

    def sessions_of(self, key_id: str) -> int:
        """How many sessions ``key_id`` holds now (for tests and status)."""
        self._expire_leases()
        return sum(1 for kid, _, _ in self._leases.values() if kid == key_id)

    def _expire_leases(self) -> None:
        now = time.monotonic()
        for session_id in [s for s, (_, _, until) in self._leases.items() if until <= now]:
            del self._leases[session_id]

    def _forget_expired(self) -> None:
        """Drop secrets an hour past expiry (kept a while so a late use says 'expired')."""
        cutoff = time.time() - 3600
        for digest in [d for d, (_, expires_at, _, _) in self._secrets.items() if expires_at < cutoff]:
            del self._secrets[digest]
