"""``AccessRegistry`` logic on a plain instance (no Ray): client secrets and per-key leases.

The deployment's user class comes from ``AccessRegistry.func_or_class``; its clocks are
replaced by a fake ``time`` module in ``serve_app.server.access_registry``.
"""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.server import access_registry
from serve_app.server.access_registry import LEASE_TTL_S, AccessRegistry, _digest

KID = "key_aaaaaaaaaaaa"
OTHER_KID = "key_bbbbbbbbbbbb"
PRESET = {"instructions": "Be brief."}


class FakeTime:
    """Wall clock and monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 5_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(access_registry, "time", fake)
    return fake


def new_registry() -> Any:
    """A fresh instance of the deployment's class (a restarted replica)."""
    cls = AccessRegistry.func_or_class
    assert isinstance(cls, type) and cls.__name__ == "AccessRegistry"
    return cls()


# -- client secrets --------------------------------------------------------------------------


def test_secret_redeems_once_then_is_used(clock: FakeTime) -> None:
    reg = new_registry()
    secret = reg.mint(KID, 600.0, PRESET)
    assert secret.value.startswith("ek_") and len(secret.value) > 30
    assert secret.expires_at == int(clock.wall + 600)

    first = reg.redeem(secret.value)
    assert (first.status, first.key_id, first.session) == ("ok", KID, PRESET)
    second = reg.redeem(secret.value)
    assert (second.status, second.key_id, second.session) == ("used", KID, None)


def test_secrets_are_distinct_and_independent(clock: FakeTime) -> None:
    reg = new_registry()
    a, b = reg.mint(KID, 600.0, None), reg.mint(OTHER_KID, 600.0, PRESET)
    assert a.value != b.value
    assert reg.redeem(b.value).key_id == OTHER_KID
    assert reg.redeem(a.value).status == "ok"


@pytest.mark.parametrize("value", ["ek_never-minted", "", "sk-an-api-key"])
def test_unknown_secret(clock: FakeTime, value: str) -> None:
    reg = new_registry()
    reg.mint(KID, 600.0, None)
    redemption = reg.redeem(value)
    assert (redemption.status, redemption.key_id, redemption.session) == ("unknown", None, None)


def test_secret_expires(clock: FakeTime) -> None:
    reg = new_registry()
    fresh = reg.mint(KID, 10.0, None)
    late = reg.mint(KID, 10.0, PRESET)
    clock.advance(9.5)
    assert reg.redeem(fresh.value).status == "ok"
    clock.advance(0.5)  # exactly at expires_at
    expired = reg.redeem(late.value)
    assert (expired.status, expired.key_id, expired.session) == ("expired", KID, None)
    assert reg.redeem(late.value).status == "used"  # never valid again, whatever the result


def test_long_expired_secrets_are_forgotten_on_the_next_mint(clock: FakeTime) -> None:
    reg = new_registry()
    old = reg.mint(KID, 10.0, None)
    clock.advance(3000)
    reg.mint(KID, 10.0, None)
    assert reg.redeem(old.value).status == "expired"  # kept a while to say why

    older = reg.mint(KID, 10.0, None)
    clock.advance(3700)
    reg.mint(KID, 10.0, None)
    assert reg.redeem(older.value).status == "unknown"


def test_secrets_are_stored_only_as_hashes(clock: FakeTime) -> None:
    reg = new_registry()
    secret = reg.mint(KID, 600.0, PRESET)
    assert secret.value not in reg._secrets
    assert _digest(secret.value) in reg._secrets
    assert all(secret.value not in repr(record) for record in reg._secrets.values())
    assert secret.value not in repr(vars(reg))


def test_registry_restart_forgets_secrets(clock: FakeTime) -> None:
    secret = new_registry().mint(KID, 600.0, None)
    assert new_registry().redeem(secret.value).status == "unknown"


# -- leases ----------------------------------------------------------------------------------


def test_acquire_up_to_the_limit_per_key(clock: FakeTime) -> None:
    reg = new_registry()
    assert reg.acquire(KID, "s1", "r1", 2)
    assert reg.acquire(KID, "s2", "r2", 2)
    assert not reg.acquire(KID, "s3", "r1", 2)
    assert reg.acquire(OTHER_KID, "s4", "r1", 2)  # another key has its own slots
    assert reg.sessions_of(KID) == 2
    assert reg.sessions_of(OTHER_KID) == 1
    assert reg.sessions_of("key_nobody") == 0


def test_release_frees_a_slot(clock: FakeTime) -> None:
    reg = new_registry()
    assert reg.acquire(KID, "s1", "r1", 1)
    assert not reg.acquire(KID, "s2", "r1", 1)
    reg.release("s1")
    reg.release("s1")  # twice is harmless
    reg.release("never-held")
    assert reg.sessions_of(KID) == 0
    assert reg.acquire(KID, "s2", "r1", 1)


def test_leases_expire_without_renewal(clock: FakeTime) -> None:
    reg = new_registry()
    assert reg.acquire(KID, "s1", "dead-replica", 1)
    clock.advance(LEASE_TTL_S - 0.5)
    assert not reg.acquire(KID, "s2", "r2", 1)
    clock.advance(0.5)
    assert reg.sessions_of(KID) == 0
    assert reg.acquire(KID, "s2", "r2", 1)


def test_renewal_keeps_leases_alive(clock: FakeTime) -> None:
    reg = new_registry()
    assert reg.acquire(KID, "s1", "r1", 1)
    for _ in range(5):
        clock.advance(LEASE_TTL_S - 1)
        reg.renew("r1", {"s1": KID})
    assert reg.sessions_of(KID) == 1
    assert not reg.acquire(KID, "s2", "r1", 1)


def test_renew_restores_leases_after_a_restart(clock: FakeTime) -> None:
    before = new_registry()
    assert before.acquire(KID, "s1", "r1", 2)
    assert before.acquire(KID, "s2", "r2", 2)

    after = new_registry()  # the registry replica restarted: it knows no leases
    assert after.sessions_of(KID) == 0
    after.renew("r1", {"s1": KID})
    after.renew("r2", {"s2": KID, "s3": OTHER_KID})
    assert after.sessions_of(KID) == 2
    assert after.sessions_of(OTHER_KID) == 1
    assert not after.acquire(KID, "s4", "r1", 2)
