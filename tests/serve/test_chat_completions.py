"""The official ``openai`` SDK against ``/v1/chat/completions`` and ``/v1/models`` of the real Serve app.

Serve's proxy, the Ingress and the LLM deployment (the fake backend) are real; the app has an
API key, so every call but the refused ones presents it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from ray import serve

from tests.conftest import deployed_app

APP = "chatapp"
KEY = "sk-voxray-chat-test"
MODEL = "fake-chat-model"
TOKENS_PER_S = 200.0
LONG_WORDS = 3000  # 15 s of reply at TOKENS_PER_S: still streaming when the client leaves


@pytest.fixture(scope="module")
def base_url(serve_instance: str) -> Iterator[str]:
    args = {
        "asr": {"backend": "fake"},
        "llm": {
            "backend": "fake",
            "model": MODEL,
            "max_tokens": 8000,
            "options": {"reply": "You said: {user}", "tokens_per_s": TOKENS_PER_S},
        },
        "tts": {"backend": "fake"},
        "speaker": None,
        "auth": {"api_keys": [KEY], "api_keys_env": None},
    }
    with deployed_app(APP, args) as prefix:
        yield serve_instance.replace("ws://", "http://") + prefix + "/v1"


def client(base_url: str, key: str = KEY) -> openai.AsyncOpenAI:
    # max_retries 0: a refusal must surface as it is, not after the SDK's retries.
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=60)


def llm_stats() -> dict[str, Any]:
    return serve.get_deployment_handle("LLM", APP).stats.remote().result()


async def test_a_completion(base_url: str) -> None:
    completion = await client(base_url).chat.completions.create(
        model="gpt-4o-mini",  # any name is accepted; the served model answers
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there."}],
    )
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.choices[0].message.content == "You said: Hello there."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4


async def test_a_stream_reassembles(base_url: str) -> None:
    stream = await client(base_url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Stream this reply, please."}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: Stream this reply, please."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_models_list(base_url: str) -> None:
    page = await client(base_url).models.list()
    assert [(m.id, m.object, m.owned_by) for m in page.data] == [(MODEL, "model", "voxray")]


async def test_a_bad_request_is_a_400(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client(base_url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2
        )
    assert raised.value.body["param"] == "n"  # type: ignore[index]
    assert "only n=1" in raised.value.message


async def test_a_wrong_key_is_a_401_and_does_no_model_work(base_url: str) -> None:
    tokens_before = (await asyncio.to_thread(llm_stats))["tokens_generated"]
    with pytest.raises(openai.AuthenticationError) as raised:
        await client(base_url, "sk-wrong").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 401
    assert raised.value.body == {  # the SDK hands over the error object
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with pytest.raises(openai.AuthenticationError):
        await client(base_url, "sk-wrong").models.list()
    assert (await asyncio.to_thread(llm_stats))["tokens_generated"] == tokens_before


async def test_a_missing_key_is_a_401(base_url: str) -> None:
    # Raw HTTP: the SDK refuses to send a request without a key.
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{base_url}/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
        )
        models = await http.get(f"{base_url}/models")
    assert (response.status_code, models.status_code) == (401, 401)
    assert response.json()["error"]["code"] == "missing_api_key"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_client_leaving_mid_stream_cancels_the_generation(base_url: str) -> None:
    before = await asyncio.to_thread(llm_stats)
    long_message = " ".join(["word"] * LONG_WORDS)
    body = {"model": MODEL, "messages": [{"role": "user", "content": long_message}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        while '"content":" word"' not in await anext(lines):  # the reply is under way
            pass
    # The connection is closed: Serve cancels the request, which closes the LLM stream.
    deadline = time.monotonic() + 20
    while True:
        stats = await asyncio.to_thread(llm_stats)
        if stats["aborted_generations"] > before["aborted_generations"] and stats["active_generations"] == 0:
            break
        assert time.monotonic() < deadline, f"the generation was not cancelled: {stats}"
        await asyncio.sleep(0.1)
    assert stats["tokens_generated"] - before["tokens_generated"] < LONG_WORDS / 2
