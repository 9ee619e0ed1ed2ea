"""``Admission``: origin, then API key or client secret, with a fake registry handle (no Ray)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from serve_app.config import AppConfig, AuthConfig
from serve_app.server.access import APIKeys, Credentials, handshake_credentials, key_id
from serve_app.server.access_registry import AccessRegistry, Redemption
from serve_app.server.admission import Admission, Admitted, check_exposure
from serve_app.server.limits import POLICY_VIOLATION, CloseConnection

KEY = "sk-voxray-unit-one"
SECRET = "ek_unit-secret"
PRESET = {"instructions": "Be brief."}


class FakeMethod:
    """``handle.method``: ``remote(*args)`` returns an awaitable of ``fn(*args)`` and records the call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)

        async def result() -> Any:
            return self._fn(*args)

        return result()


class FakeRegistry:
    """A registry handle that answers ``redeem`` from a table (unknown tokens: ``unknown``)."""

    def __init__(self, redemptions: dict[str, Redemption] | None = None) -> None:
        table = redemptions or {}
        self.redeem = FakeMethod(lambda token: table.get(token, Redemption(status="unknown")))


class RegistryHandle:
    """A handle over a real ``AccessRegistry`` instance: every method answers through ``.remote``."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> FakeMethod:
        return FakeMethod(getattr(self._registry, name))


def admission(registry: Any = None, **auth: Any) -> Admission:
    """An ``Admission`` for an ``auth`` section; keys never come from the real environment."""
    config = AppConfig.model_validate({"auth": {"api_keys_env": None, **auth}})
    return Admission(config, APIKeys(config.auth, environ={}), registry or FakeRegistry())


def handshake(client: str | None = "127.0.0.1", **headers: str) -> HTTPConnection:
    """A WebSocket handshake's connection, from ``client`` with ``headers``."""
    raw = [(k.replace("_", "-").encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    scope = {
        "type": "websocket",
        "path": "/v1/realtime",
        "query_string": b"",
        "headers": raw,
        "client": (client, 1234) if client is not None else None,
    }
    return HTTPConnection(scope)


def presented(token: str | None) -> Credentials:
    headers = Headers({"authorization": f"Bearer {token}"} if token else {})
    return handshake_credentials(headers, ["realtime"])


async def refused(adm: Admission, connection: HTTPConnection, credentials: Credentials) -> str:
    """The error code ``admit`` refuses with (failing if it admits)."""
    with pytest.raises(CloseConnection) as info:
        await adm.admit(connection, credentials)
    close = info.value
    assert close.code == POLICY_VIOLATION
    assert close.error["type"] == "error"
    assert close.reason and len(close.reason.encode()) <= 123
    assert KEY not in close.reason and KEY not in close.error["error"]["message"]
    return str(close.error["error"]["code"])


# -- no keys configured ----------------------------------------------------------------------


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "localhost"])
async def test_no_keys_admits_loopback_clients(client: str) -> None:
    assert await admission().admit(handshake(client), presented(None)) == Admitted(key_id=None)


@pytest.mark.parametrize("client", ["10.1.2.3", "2001:db8::5", None])
async def test_no_keys_refuses_remote_clients(client: str | None) -> None:
    assert await refused(admission(), handshake(client), presented(None)) == "loopback_only"


async def test_no_keys_refuses_remote_clients_whatever_they_present() -> None:
    assert await refused(admission(), handshake("10.1.2.3"), presented("sk-anything")) == "loopback_only"


async def test_no_keys_and_allow_unauthenticated_admits_remote_clients() -> None:
    adm = admission(allow_unauthenticated=True)
    assert await adm.admit(handshake("203.0.113.9"), presented(None)) == Admitted(key_id=None)


async def test_no_keys_refuses_foreign_browser_pages_even_on_loopback() -> None:
    conn = handshake("127.0.0.1", origin="https://evil.example")
    assert await refused(admission(), conn, presented(None)) == "origin_not_allowed"
    ok = handshake("127.0.0.1", origin="http://localhost:5173")
    assert await admission().admit(ok, presented(None)) == Admitted()


# -- API keys --------------------------------------------------------------------------------


async def test_valid_key_is_admitted_with_its_id_from_anywhere() -> None:
    adm = admission(api_keys=[KEY])
    assert await adm.admit(handshake("203.0.113.9"), presented(KEY)) == Admitted(key_id=key_id(KEY))


async def test_key_in_the_subprotocol_is_admitted() -> None:
    creds = handshake_credentials(Headers({}), ["realtime", f"openai-insecure-api-key.{KEY}"])
    admitted = await admission(api_keys=[KEY]).admit(handshake("203.0.113.9"), creds)
    assert admitted.key_id == key_id(KEY)


async def test_missing_key_is_refused() -> None:
    assert await refused(admission(api_keys=[KEY]), handshake(), presented(None)) == "missing_api_key"


@pytest.mark.parametrize("token", ["sk-wrong", KEY + "x", KEY[:-1]])
async def test_wrong_key_is_refused(token: str) -> None:
    assert await refused(admission(api_keys=[KEY]), handshake(), presented(token)) == "invalid_api_key"


async def test_key_file_configured_but_missing_refuses_loopback_without_a_key(tmp_path: Any) -> None:
    adm = admission(api_keys_file=str(tmp_path / "absent"))
    assert await refused(adm, handshake("127.0.0.1"), presented(None)) == "missing_api_key"


async def test_origin_is_checked_before_the_key() -> None:
    adm = admission(api_keys=[KEY], allowed_origins=["https://app.example.com"])
    conn = handshake(origin="https://evil.example")
    assert await refused(adm, conn, presented(None)) == "origin_not_allowed"
    good = handshake(origin="https://app.example.com")
    assert (await adm.admit(good, presented(KEY))).key_id == key_id(KEY)


def test_check_api_key_alone() -> None:
    adm = admission(api_keys=[KEY])
    assert adm.check_api_key(handshake(), KEY) == key_id(KEY)
    with pytest.raises(CloseConnection) as info:
        adm.check_api_key(handshake(), "")
    assert info.value.error["error"]["code"] == "missing_api_key"


# -- client secrets --------------------------------------------------------------------------


def secret_admission(redemption: Redemption, keys: list[str] | None = None) -> tuple[Admission, FakeRegistry]:
    registry = FakeRegistry({SECRET: redemption})
    return admission(registry, api_keys=[KEY] if keys is None else keys), registry


async def test_client_secret_ok_is_admitted_with_its_preset() -> None:
    adm, registry = secret_admission(Redemption(status="ok", key_id=key_id(KEY), session=PRESET))
    admitted = await adm.admit(handshake("203.0.113.9"), presented(SECRET))
    assert admitted == Admitted(key_id=key_id(KEY), session_preset=PRESET)
    assert registry.redeem.calls == [(SECRET,)]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("expired", "client_secret_expired"),
        ("used", "client_secret_used"),
        ("unknown", "invalid_client_secret"),
    ],
)
async def test_client_secret_refusals(status: str, code: str) -> None:
    adm, _ = secret_admission(Redemption(status=status, key_id=key_id(KEY)))  # type: ignore[arg-type]
    assert await refused(adm, handshake(), presented(SECRET)) == code


async def test_client_secret_of_a_revoked_key_is_refused() -> None:
    adm, _ = secret_admission(Redemption(status="ok", key_id=key_id("sk-revoked")), keys=[KEY])
    assert await refused(adm, handshake(), presented(SECRET)) == "invalid_api_key"


async def test_origin_is_checked_before_a_secret_is_used_up() -> None:
    registry = FakeRegistry({SECRET: Redemption(status="ok", key_id=key_id(KEY))})
    adm = admission(registry, api_keys=[KEY], allowed_origins=["https://app.example.com"])
    conn = handshake(origin="https://evil.example")
    assert await refused(adm, conn, presented(SECRET)) == "origin_not_allowed"
    assert registry.redeem.calls == []


async def test_api_keys_never_reach_the_registry() -> None:
    registry = FakeRegistry()
    await admission(registry, api_keys=[KEY]).admit(handshake(), presented(KEY))
    assert registry.redeem.calls == []


async def test_secret_from_a_real_registry_admits_once() -> None:
    real = AccessRegistry.func_or_class()  # the deployment's user class, instantiated
    adm = admission(RegistryHandle(real), api_keys=[KEY])
    secret = real.mint(key_id(KEY), 60.0, PRESET)
    creds = handshake_credentials(Headers({}), ["realtime", f"openai-insecure-api-key.{secret.value}"])
    assert creds.is_client_secret
    assert await adm.admit(handshake(), creds) == Admitted(key_id=key_id(KEY), session_preset=PRESET)
    assert await refused(adm, handshake(), creds) == "client_secret_used"


async def test_keyless_secret_follows_the_loopback_rule() -> None:
    adm, _ = secret_admission(Redemption(status="ok", key_id=None, session=PRESET), keys=[])
    admitted = await adm.admit(handshake("127.0.0.1"), presented(SECRET))
    assert admitted == Admitted(key_id=None, session_preset=PRESET)
    adm, _ = secret_admission(Redemption(status="ok", key_id=None), keys=[])
    assert await refused(adm, handshake("203.0.113.9"), presented(SECRET)) == "loopback_only"


async def test_keyless_secret_is_refused_once_keys_are_configured() -> None:
    adm, _ = secret_admission(Redemption(status="ok", key_id=None), keys=[KEY])
    assert await refused(adm, handshake(), presented(SECRET)) == "invalid_client_secret"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::"])
def test_no_keys_on_a_public_address_refuses_to_start(host: str) -> None:
    with pytest.raises(RuntimeError, match="no API key configured"):
        check_exposure(AuthConfig(api_keys_env=None), False, lambda: host)


@pytest.mark.parametrize(
    ("keys", "allow", "host"),
    [(False, False, "127.0.0.1"), (False, False, None), (True, False, "0.0.0.0"), (False, True, "0.0.0.0")],
)
def test_exposure_that_is_allowed(keys: bool, allow: bool, host: str | None) -> None:
    check_exposure(AuthConfig(api_keys_env=None, allow_unauthenticated=allow), keys, lambda: host)
