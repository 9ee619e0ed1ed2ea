"""Access control on the real Serve app: API keys, client secrets, origins, per-key limits.

Every refusal must come before any model work: the refused socket gets exactly one
``error`` event (never ``session.created``) and close code 1008 or 1013, and the model
deployments see no call.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import websockets
from openai import AsyncOpenAI
from ray import serve

from serve_app.client.talk import TalkServerError, talk
from tests.conftest import deploy_app, kill_only_replica
from tests.realtime_client import validate_server_event

APP = "accessapp"
KEY = "sk-voxray-test-one"
FILE_KEY = "sk-voxray-test-from-file"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(f"# voxray keys\n{FILE_KEY}\n")
    return path


@pytest.fixture(scope="module")
def base(serve_instance: str, key_file: Path) -> str:
    args = {
        "asr": {"backend": "fake"},
        "llm": {"backend": "fake", "options": {"reply": "Okay."}},
        "tts": {"backend": "fake"},
        "auth": {
            "api_keys": [KEY],
            "api_keys_env": None,
            "api_keys_file": str(key_file),
            "allowed_origins": [ORIGIN, "http://localhost:*"],
        },
        "limits": {"max_sessions_per_key": 2},
    }
    return serve_instance + deploy_app(APP, args)


async def connect(base: str, **kwargs: Any) -> Any:
    return await websockets.connect(f"{base}/v1/realtime", max_size=None, **kwargs)


async def first_event_and_close(ws: Any) -> tuple[dict[str, Any], int | None, str]:
    """The one event a refused socket gets, and how it was closed."""
    event = json.loads(await asyncio.wait_for(ws.recv(), 30))
    validate_server_event(event)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    return event, ws.close_code, ws.close_reason


def model_calls() -> int:
    """ASR transcriptions plus LLM tokens so far."""
    asr = serve.get_deployment_handle("ASR", APP).stats.remote().result()
    llm = serve.get_deployment_handle("LLM", APP).stats.remote().result()
    return int(asr["calls"]) + int(llm["tokens_generated"])


def healthz(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base.replace("ws://", "http://") + "/healthz", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, "missing_api_key"),
        ({"additional_headers": {"Authorization": "Bearer sk-wrong"}}, "invalid_api_key"),
        ({"subprotocols": ["realtime", "openai-insecure-api-key.sk-wrong"]}, "invalid_api_key"),
        (
            {"additional_headers": {"Authorization": f"Bearer {KEY}", "Origin": "https://evil.example"}},
            "origin_not_allowed",
        ),
        ({"additional_headers": {"Authorization": "Bearer ek_never-minted"}}, "invalid_client_secret"),
    ],
    ids=["no-key", "wrong-key", "wrong-key-subprotocol", "wrong-origin", "unknown-secret"],
)
async def test_refused_before_any_model_work(base: str, kwargs: dict[str, Any], code: str) -> None:
    calls_before = await asyncio.to_thread(model_calls)
    refused_before = (await asyncio.to_thread(healthz, base))["refused"].get(code, 0)
    ws = await connect(base, **kwargs)
    event, close_code, _ = await first_event_and_close(ws)
    assert event["type"] == "error"
    assert event["error"]["code"] == code
    assert close_code == 1008
    assert await asyncio.to_thread(model_calls) == calls_before
    assert (await asyncio.to_thread(healthz, base))["refused"][code] == refused_before + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"additional_headers": {"Authorization": f"Bearer {KEY}"}},
        {"subprotocols": ["realtime", f"openai-insecure-api-key.{KEY}"], "origin": ORIGIN},
        {"additional_headers": {"Authorization": f"Bearer {FILE_KEY}", "Origin": "http://localhost:5173"}},
    ],
    ids=["header", "browser-subprotocol", "key-file"],
)
async def test_valid_key_opens_a_session(base: str, kwargs: dict[str, Any]) -> None:
    async with await connect(base, **kwargs) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert created["type"] == "session.created"
        if "subprotocols" in kwargs:
            assert ws.subprotocol == "realtime"  # never the key-carrying subprotocol


async def test_client_secret_with_the_openai_sdk(base: str) -> None:
    http = base.replace("ws://", "http://") + "/v1"
    backend = AsyncOpenAI(api_key=KEY, base_url=http)
    secret = await backend.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "realtime", "instructions": "Answer in French."},
    )
    assert secret.value.startswith("ek_")
    assert secret.session.instructions == "Answer in French."
    browser = AsyncOpenAI(api_key=secret.value, websocket_base_url=base + "/v1")
    async with browser.realtime.connect(model="voxray") as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        assert created.session.instructions == "Answer in French."  # the preset applies
    # Single use: the same secret again is refused.
    ws = await connect(base, subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"])
    event, close_code, _ = await first_event_and_close(ws)
    assert (event["error"]["code"], close_code) == ("client_secret_used", 1008)


async def test_minting_needs_an_api_key(base: str) -> None:
    http = base.replace("ws://", "http://") + "/v1"
    for key in ("sk-wrong", "ek_not-a-key"):
        with pytest.raises(openai.AuthenticationError):
            await AsyncOpenAI(api_key=key, base_url=http).realtime.client_secrets.create()
    with pytest.raises(openai.BadRequestError) as bad:
        await AsyncOpenAI(api_key=KEY, base_url=http).realtime.client_secrets.create(
            session={"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}
        )
    assert "audio/pcmu" in str(bad.value)
    assert bad.value.code == "invalid_value"


async def test_expired_client_secret_is_refused(base: str) -> None:
    http = base.replace("ws://", "http://") + "/v1"
    secret = await AsyncOpenAI(api_key=KEY, base_url=http).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 10}
    )
    await asyncio.sleep(10.5)
    ws = await connect(base, additional_headers={"Authorization": f"Bearer {secret.value}"})
    event, close_code, _ = await first_event_and_close(ws)
    assert (event["error"]["code"], close_code) == ("client_secret_expired", 1008)


async def test_per_key_session_limit_counts_live_sessions(base: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    first = await connect(base, additional_headers=headers)
    second = await connect(base, additional_headers=headers)
    for ws in (first, second):
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"
    third = await connect(base, additional_headers=headers)
    event, close_code, _ = await first_event_and_close(third)
    assert (event["error"]["code"], close_code) == ("session_limit_reached", 1013)
    await first.close()
    await asyncio.sleep(0.5)  # the Ingress releases the slot when the session's task ends
    async with await connect(base, additional_headers=headers) as fourth:
        assert json.loads(await asyncio.wait_for(fourth.recv(), 30))["type"] == "session.created"
    await second.close()


async def test_removing_a_key_from_the_file_ends_its_sessions(base: str, key_file: Path) -> None:
    ws = await connect(base, additional_headers={"Authorization": f"Bearer {FILE_KEY}"})
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"
    try:
        key_file.write_text("# revoked\n")
        event, close_code, _ = await first_event_and_close(ws)
        assert (event["error"]["code"], close_code) == ("api_key_revoked", 1008)
        again = await connect(base, additional_headers={"Authorization": f"Bearer {FILE_KEY}"})
        event, close_code, _ = await first_event_and_close(again)
        assert (event["error"]["code"], close_code) == ("invalid_api_key", 1008)
    finally:
        key_file.write_text(f"{FILE_KEY}\n")


async def test_voxray_talk_with_and_without_a_key(base: str, make_utterance: Any) -> None:
    audio = make_utterance("What is the capital of France?", lead_silence_s=0.2, trail_silence_s=0.8)
    with pytest.raises(TalkServerError, match="missing_api_key"):
        await talk(audio, url=f"{base}/v1/realtime", fast=True, timeout=60)
    result = await talk(audio, url=f"{base}/v1/realtime", fast=True, timeout=60, api_key=KEY)
    assert result.user_transcript == "What is the capital of France?"


async def test_access_registry_restart_fails_closed_then_recovers(base: str) -> None:
    http = base.replace("ws://", "http://") + "/v1"
    backend = AsyncOpenAI(api_key=KEY, base_url=http)
    secret = await backend.realtime.client_secrets.create()
    await asyncio.to_thread(kill_only_replica, APP, "AccessRegistry")
    ws = await connect(base, additional_headers={"Authorization": f"Bearer {secret.value}"})
    event, close_code, _ = await first_event_and_close(ws)
    # Refused either way: retryably while the registry is down, or as unknown once it is back.
    assert (event["error"]["code"], close_code) in {
        ("access_check_unavailable", 1013),
        ("invalid_client_secret", 1008),
    }
    for _ in range(60):  # Serve replaces the replica; a fresh secret then works
        try:
            fresh = await backend.realtime.client_secrets.create()
            break
        except openai.APIError:
            await asyncio.sleep(1)
    async with await connect(base, additional_headers={"Authorization": f"Bearer {fresh.value}"}) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"
