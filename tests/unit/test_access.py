"""Access rules without a server: API keys, handshake credentials, origins, loopback.

The Serve-level tests (``tests/serve/test_access.py``) show the rules on the real app; these
cover the edge cases cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from serve_app.config import AuthConfig
from serve_app.server.access import (
    APIKeys,
    bearer_token,
    handshake_credentials,
    is_loopback,
    key_id,
    origin_allowed,
)

KEY = "sk-voxray-unit-one"
OTHER = "sk-voxray-unit-two"


def keys_of(environ: dict[str, str] | None = None, **auth: object) -> APIKeys:
    """``APIKeys`` for an ``auth`` section; the environment is ``environ`` (never the real one)."""
    return APIKeys(AuthConfig.model_validate(auth), environ=environ or {})


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the modification time on, so a reload cannot miss the change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


# -- API keys --------------------------------------------------------------------------------


def test_keys_from_the_config_list() -> None:
    keys = keys_of(api_keys=[KEY, OTHER], api_keys_env=None)
    assert keys.configured
    assert keys.match(KEY) == key_id(KEY)
    assert keys.match(OTHER) == key_id(OTHER)


def test_blank_config_keys_are_not_keys() -> None:
    keys = keys_of(api_keys=["", "   "], api_keys_env=None)
    assert not keys.configured
    assert keys.match("") is None
    assert keys.match("   ") is None


def test_keys_from_an_environment_variable() -> None:
    environ = {"MY_KEYS": f" {KEY} ,, {OTHER},  ,"}
    keys = keys_of(environ, api_keys_env="MY_KEYS")
    assert keys.configured
    assert keys.match(KEY) == key_id(KEY)
    assert keys.match(OTHER) == key_id(OTHER)
    assert keys.valid_ids() == {key_id(KEY), key_id(OTHER)}
    assert keys.match("") is None


def test_unset_or_empty_environment_variable_configures_nothing() -> None:
    assert not keys_of({}, api_keys_env="MY_KEYS").configured
    assert not keys_of({"MY_KEYS": " , ,"}, api_keys_env="MY_KEYS").configured
    assert not keys_of({"MY_KEYS": KEY}, api_keys_env=None).configured


def test_keys_from_a_file_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# voxray keys\n\n{KEY}\n   \n  {OTHER}  \r\n#{KEY}-commented\n")
    keys = keys_of(api_keys_env=None, api_keys_file=str(path))
    assert keys.valid_ids() == {key_id(KEY), key_id(OTHER)}
    assert keys.match(OTHER) == key_id(OTHER)
    assert keys.match("# voxray keys") is None
    assert keys.match(f"#{KEY}-commented") is None


def test_indented_comment_in_the_key_file_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY}\n  # rotated 2024\n")
    keys = keys_of(api_keys_env=None, api_keys_file=str(path))
    assert keys.match("# rotated 2024") is None


def test_key_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY}\n{OTHER}\n")
    keys = keys_of(api_keys_env=None, api_keys_file=str(path))
    assert keys.match(OTHER) == key_id(OTHER)

    rewrite(path, f"{KEY}\n")
    assert keys.match(OTHER) is None
    assert keys.match(KEY) == key_id(KEY)
    assert not keys.is_valid_id(key_id(OTHER))

    rewrite(path, f"{KEY}\n{OTHER}-new\n")
    assert keys.match(f"{OTHER}-new") == key_id(f"{OTHER}-new")


def test_deleted_key_file_revokes_its_keys_but_stays_configured(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY}\n")
    keys = keys_of(api_keys=[OTHER], api_keys_env=None, api_keys_file=str(path))
    assert keys.match(KEY) == key_id(KEY)

    path.unlink()
    assert keys.match(KEY) is None
    assert keys.match(OTHER) == key_id(OTHER)  # keys from the config are unaffected
    assert keys.configured


def test_missing_key_file_is_configured_with_no_keys_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "not-yet"
    keys = keys_of(api_keys_env=None, api_keys_file=str(path))
    assert keys.configured  # with a key file named, the server is never open to all
    assert keys.valid_ids() == set()
    assert keys.match(KEY) is None

    rewrite(path, f"{KEY}\n")
    assert keys.match(KEY) == key_id(KEY)


def test_match_names_the_key_by_its_id_and_never_returns_it() -> None:
    keys = keys_of(api_keys=[KEY], api_keys_env=None)
    found = keys.match(KEY)
    assert found == key_id(KEY)
    assert found is not None and KEY not in found
    assert found.startswith("key_") and len(found) == len("key_") + 12
    assert key_id(KEY) != key_id(OTHER)


@pytest.mark.parametrize("presented", ["", " ", KEY[:-1], KEY + "x", KEY.upper(), f" {KEY}", "sk-é"])
def test_wrong_keys_do_not_match(presented: str) -> None:
    keys = keys_of(api_keys=[KEY], api_keys_env=None)
    assert keys.match(presented) is None


def test_valid_ids_and_is_valid_id_cover_every_source(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-from-file\n")
    keys = keys_of(
        {"ENV_KEYS": "sk-from-env"}, api_keys=[KEY], api_keys_env="ENV_KEYS", api_keys_file=str(path)
    )
    ids = {key_id(KEY), key_id("sk-from-env"), key_id("sk-from-file")}
    assert keys.valid_ids() == ids
    assert all(keys.is_valid_id(kid) for kid in ids)
    assert not keys.is_valid_id(key_id(OTHER))
    assert not keys.is_valid_id(KEY)  # a raw key is not an id


# -- handshake credentials -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr"])
def test_bearer_header_in_any_case(scheme: str) -> None:
    creds = handshake_credentials(Headers({"Authorization": f"{scheme} {KEY}"}), [])
    assert (creds.token, creds.source) == (KEY, "header")
    assert bearer_token(Headers({"Authorization": f"{scheme}  {KEY} "})) == KEY


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer ", "Bearer    ", KEY])
def test_non_bearer_or_empty_authorization_carries_no_token(value: str) -> None:
    creds = handshake_credentials(Headers({"Authorization": value}), [])
    assert (creds.token, creds.source) == (None, None)
    assert bearer_token(Headers({"Authorization": value})) is None


def test_key_in_a_subprotocol_and_realtime_is_chosen() -> None:
    offered = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]
    creds = handshake_credentials(Headers({}), offered)
    assert (creds.token, creds.source) == (KEY, "subprotocol")
    assert creds.subprotocol == "realtime"


def test_key_carrying_subprotocol_is_never_chosen() -> None:
    creds = handshake_credentials(Headers({}), [f"openai-insecure-api-key.{KEY}"])
    assert creds.token == KEY
    assert creds.subprotocol is None
    creds = handshake_credentials(Headers({}), [f"openai-insecure-api-key.{KEY}", "chat"])
    assert creds.subprotocol == "chat"


def test_header_wins_over_the_subprotocol() -> None:
    offered = [f"openai-insecure-api-key.{OTHER}", "realtime"]
    creds = handshake_credentials(Headers({"authorization": f"Bearer {KEY}"}), offered)
    assert (creds.token, creds.source) == (KEY, "header")
    assert creds.subprotocol == "realtime"


def test_empty_key_subprotocol_is_ignored() -> None:
    creds = handshake_credentials(Headers({}), ["openai-insecure-api-key.", "realtime"])
    assert (creds.token, creds.source) == (None, None)
    assert creds.subprotocol == "realtime"


def test_first_key_subprotocol_counts() -> None:
    offered = [
        "openai-insecure-api-key.",
        f"openai-insecure-api-key.{KEY}",
        f"openai-insecure-api-key.{OTHER}",
    ]
    assert handshake_credentials(Headers({}), offered).token == KEY


def test_nothing_presented() -> None:
    creds = handshake_credentials(Headers({}), [])
    assert (creds.token, creds.source, creds.subprotocol) == (None, None, None)
    assert not creds.is_client_secret


def test_client_secret_is_told_apart_from_api_keys() -> None:
    secret = handshake_credentials(Headers({}), ["realtime", "openai-insecure-api-key.ek_abc123"])
    assert secret.is_client_secret
    assert not handshake_credentials(Headers({"authorization": f"Bearer {KEY}"}), []).is_client_secret
    assert not handshake_credentials(Headers({"authorization": "Bearer xek_1"}), []).is_client_secret


# -- origins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("patterns", [None, [], ["https://app.example.com"]])
@pytest.mark.parametrize("keys_configured", [True, False])
def test_requests_without_an_origin_pass(patterns: list[str] | None, keys_configured: bool) -> None:
    assert origin_allowed(None, patterns, keys_configured)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:5173"])
def test_default_with_keys_allows_any_origin(origin: str) -> None:
    assert origin_allowed(origin, None, keys_configured=True)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost", True),
        ("http://localhost:5173", True),
        ("http://127.0.0.1:8000", True),
        ("http://[::1]:3000", True),
        ("http://[::1]", True),
        ("HTTP://LOCALHOST:5173/", True),
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://[::1].evil.example", False),
        ("http://evil.example:80", False),
        ("null", False),
    ],
)
def test_default_without_keys_allows_only_loopback_pages(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, None, keys_configured=False) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("HTTPS://App.Example.COM", True),
        ("https://app.example.com/", True),
        ("https://example.com", False),
        ("http://app.example.com", False),
        ("https://app.example.com.evil.example", False),
        ("https://evil-example.com", False),
        ("http://localhost:5173", False),  # explicit patterns replace the loopback default
    ],
)
@pytest.mark.parametrize("keys_configured", [True, False])
def test_explicit_patterns(origin: str, allowed: bool, keys_configured: bool) -> None:
    patterns = ["https://*.example.com", "HTTPS://Exact.Example.org/"]
    assert origin_allowed(origin, patterns, keys_configured) is allowed
    assert origin_allowed("https://exact.example.org", patterns, keys_configured)


def test_empty_pattern_list_refuses_every_browser_page() -> None:
    assert not origin_allowed("http://localhost", [], keys_configured=True)
    assert origin_allowed("https://anything.example", ["*"], keys_configured=False)


# -- loopback --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", [None, "", "0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "2001:db8::1", "localhost.evil", "x"]
)
def test_non_loopback_hosts(host: str | None) -> None:
    assert not is_loopback(host)


def test_config_keys_are_stripped_and_ek_keys_are_refused(tmp_path: Path) -> None:
    keys = keys_of(api_keys=[f"  {KEY} ", "ek_looks_like_a_secret"], api_keys_env=None)
    assert keys.match(KEY) == key_id(KEY)
    assert keys.match("ek_looks_like_a_secret") is None


def test_same_size_rewrite_of_the_key_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-aaaa\n")
    keys = keys_of(api_keys_env=None, api_keys_file=str(path))
    assert keys.match("sk-aaaa") is not None
    replacement = tmp_path / "keys.new"
    replacement.write_text("sk-bbbb\n")  # same size; a Secret volume swaps files like this
    replacement.replace(path)
    assert keys.match("sk-aaaa") is None
    assert keys.match("sk-bbbb") is not None
