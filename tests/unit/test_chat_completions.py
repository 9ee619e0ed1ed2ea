"""``POST /v1/chat/completions`` and ``GET /v1/models`` without Ray: validation, rendering, errors.

The endpoint functions run in a small FastAPI app over the fake LLM backend, reached through
httpx's in-process ASGI transport (by the official ``openai`` SDK where it can tell whether
the responses have OpenAI's shapes); ``tests/serve/test_chat_completions.py`` runs the same
through the real Serve app.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from deployments.backends.fake import FakeLLM
from serve_app.config import AppConfig
from serve_app.observability.metrics import MemoryRecorder
from serve_app.server.access import APIKeys
from serve_app.server.admission import Admission
from serve_app.server.chat_completion_request import OpenAIError, parse_request
from serve_app.server.chat_completions import (
    Generation,
    StopScanner,
    chat_completion_response,
    models_response,
    stream_events,
)

KEY = "sk-voxray-unit"
LOOPBACK = ("127.0.0.1", 50000)
USER = [{"role": "user", "content": "Hello there."}]
REPLY = "You said: Hello there. That is a fine question, and here is a short answer to it."


def app_config(**auth: Any) -> AppConfig:
    return AppConfig.model_validate(
        {
            "llm": {"backend": "fake", "model": "fake-llm", "max_tokens": 50},
            "auth": {"api_keys_env": None, **auth},
        }
    )


def make_app(config: AppConfig, llm: FakeLLM, draining: bool = False) -> FastAPI:
    """The two endpoints as the Ingress mounts them, over ``llm``."""
    admission = Admission(config, APIKeys(config.auth), registry=None)
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        return await chat_completion_response(request, config, llm, admission, draining)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        return models_response(request, config, admission, draining)

    return app


def http(app: FastAPI, client: tuple[str, int] = LOOPBACK) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=client), base_url="http://voxray/v1")


def sdk(app: FastAPI, key: str = "unused", client: tuple[str, int] = LOOPBACK) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://voxray/v1", http_client=http(app, client), max_retries=0
    )


def events(body: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body (``[DONE]`` as the string)."""
    payloads = [line[len("data: ") :] for line in body.split("\n\n") if line]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


# --- validation -----------------------------------------------------------------------------


def bad(body: dict[str, Any] | bytes) -> OpenAIError:
    with pytest.raises(OpenAIError) as raised:
        parse_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert raised.value.status == 400 and raised.value.type == "invalid_request_error"
    return raised.value


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": USER, "n": 2}, "n", "only n=1"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role", "'tool'"),
        ({"messages": [*USER, {"role": "user"}]}, "messages[1]", "needs content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
            "only text content parts",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "a string or a list"),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content", "must be objects"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content",
            "string `text`",
        ),
        ({"messages": []}, "messages", "at least 1"),
        ({}, "messages", "required"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": USER, "max_completion_tokens": 10**6}, "max_completion_tokens", "8192"),
        ({"messages": USER, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"messages": USER, "top_p": 0}, "top_p", "greater than 0"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": USER, "stream": "maybe"}, "stream", "boolean"),
        (
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
            "tool calling",
        ),
        ({"messages": USER, "logprobs": True}, "logprobs", "not supported"),
    ],
)
def test_a_bad_request_names_the_field(body: dict[str, Any], param: str, words: str) -> None:
    error = bad(body)
    assert error.param == param
    assert words in error.message and param in error.message


def test_a_body_that_is_not_a_json_object_is_refused() -> None:
    assert "parse the JSON" in bad(b"{not json").message
    assert "JSON object" in bad(b"[1, 2]").message


def test_messages_become_the_llm_deployments_messages() -> None:
    request = parse_request(
        json.dumps(
            {
                "model": "anything",
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {
                        "role": "system",
                        "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}],
                    },
                    {"role": "user", "content": "Weather?", "name": "ann"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "weather", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                ],
                "user": "ignored",
                "presence_penalty": 0.5,
            }
        ).encode()
    )
    chat = [(m.role, m.content) for m in (m.to_chat() for m in request.messages)]
    assert chat == [
        ("system", "Be brief."),
        ("system", "One\nTwo"),
        ("user", "Weather?"),
        ("assistant", "[called weather({})]"),
        ("user", "Result of tool call call_1: Sunny"),
    ]


def test_sampling_takes_the_request_then_the_configured_llm() -> None:
    config = app_config()
    plain = parse_request(json.dumps({"messages": USER}).encode()).sampling(config)
    assert (plain.max_tokens, plain.temperature, plain.top_p) == (50, config.llm.temperature, 0.95)
    body = {
        "messages": USER,
        "max_tokens": 7,
        "max_completion_tokens": 9,
        "temperature": 0,
        "top_p": 1,
        "seed": 3,
    }
    asked = parse_request(json.dumps(body).encode()).sampling(config)
    assert (asked.max_tokens, asked.temperature, asked.top_p, asked.seed) == (9, 0.0, 1.0, 3)


def test_stop_sequences_are_cut_even_across_deltas() -> None:
    scanner = StopScanner(["END", "\n\n"])
    assert scanner.push("Hello E") == "Hello "  # "E" might start "END": held back
    assert scanner.push("xtra") == "Extra"
    assert scanner.push(" EN") == " "
    assert scanner.push("D and more") == "" and scanner.stopped
    unfinished = StopScanner(["END"])
    assert unfinished.push("ok EN") == "ok " and unfinished.flush() == "EN" and not unfinished.stopped


# --- the endpoints --------------------------------------------------------------------------


async def test_a_completion_has_openais_shape(recorded: MemoryRecorder) -> None:
    client = sdk(make_app(app_config(), FakeLLM(None, {})))
    completion = await client.chat.completions.create(model="whatever", messages=USER)
    assert isinstance(completion, ChatCompletion)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "fake-llm"  # the served model, whatever was asked for
    [choice] = completion.choices
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert choice.message.content == REPLY
    assert completion.usage is not None and completion.usage.completion_tokens == len(REPLY.split(" "))
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert recorded.total("voxray_turns", outcome="completed", protocol="chat_completions") == 1
    assert len(recorded.observed("voxray_llm_time_to_first_token_seconds", deployment="LLM")) == 1


async def test_a_stream_reassembles_and_ends_with_usage_and_done() -> None:
    app = make_app(app_config(), FakeLLM(None, {}))
    body = {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    response = await http(app).post("/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    payloads = events(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(p) for p in payloads[:-1]]
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])  # include_usage: usage null but in the last chunk
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(
        "usage" not in p
        for p in events(
            (await http(app).post("/chat/completions", json={**body, "stream_options": None})).text
        )[:-1]
    )


async def test_the_sdk_streams_text(recorded: MemoryRecorder) -> None:
    client = sdk(make_app(app_config(), FakeLLM(None, {})))
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == REPLY
    assert recorded.total("voxray_turns", outcome="completed", protocol="chat_completions") == 1


async def test_a_stop_sequence_ends_the_generation_and_max_tokens_reports_length() -> None:
    llm = FakeLLM(None, {})
    client = sdk(make_app(app_config(), llm))
    stopped = await client.chat.completions.create(model="m", messages=USER, stop="fine")
    assert stopped.choices[0].message.content == "You said: Hello there. That is a "
    assert stopped.choices[0].finish_reason == "stop"
    assert llm.stats()["aborted_generations"] == 1  # closed early: no tokens made past the stop
    short = await client.chat.completions.create(model="m", messages=USER, max_tokens=3)
    assert short.choices[0].message.content == "You said: Hello"
    assert short.choices[0].finish_reason == "length"


async def test_models_lists_the_served_model() -> None:
    page = await sdk(make_app(app_config(), FakeLLM(None, {}))).models.list()
    assert [(m.id, m.object, m.owned_by) for m in page.data] == [("fake-llm", "model", "voxray")]


async def test_api_keys_guard_both_endpoints(recorded: MemoryRecorder) -> None:
    app = make_app(app_config(api_keys=[KEY]), FakeLLM(None, {}))
    with pytest.raises(openai.AuthenticationError) as wrong:
        await sdk(app, "sk-wrong").chat.completions.create(model="m", messages=USER)
    assert wrong.value.status_code == 401
    assert wrong.value.body == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    missing = await http(app).get("/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert (await sdk(app, KEY).models.list()).data[0].id == "fake-llm"
    completion = await sdk(app, KEY, client=("203.0.113.9", 1)).chat.completions.create(
        model="m", messages=USER
    )
    assert completion.choices[0].message.content == REPLY
    assert recorded.total("voxray_connections_rejected", protocol="chat_completions") == 2


async def test_without_keys_only_loopback_is_served_as_on_the_websockets() -> None:
    app = make_app(app_config(), FakeLLM(None, {}))
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk(app, client=("203.0.113.9", 1)).models.list()
    assert refused.value.body["code"] == "loopback_only"  # type: ignore[index]
    open_app = make_app(app_config(allow_unauthenticated=True), FakeLLM(None, {}))
    assert (await sdk(open_app, client=("203.0.113.9", 1)).models.list()).data


async def test_a_draining_replica_answers_503() -> None:
    response = await http(make_app(app_config(), FakeLLM(None, {}), draining=True)).post(
        "/chat/completions", json={"messages": USER}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert response.json()["error"]["type"] == "server_error"


async def test_bad_input_is_a_400_and_an_oversized_body_a_413() -> None:
    client = sdk(make_app(app_config(), FakeLLM(None, {})))
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="m", messages=USER, n=2)
    assert raised.value.body["param"] == "n"  # type: ignore[index]
    small = app_config().model_copy(
        update={"limits": app_config().limits.model_copy(update={"max_message_bytes": 1024})}
    )
    response = await http(make_app(small, FakeLLM(None, {}))).post(
        "/chat/completions", json={"messages": [{"role": "user", "content": "x" * 2000}]}
    )
    assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error"


async def test_a_model_failure_is_a_500_before_the_stream_and_an_error_event_after(
    recorded: MemoryRecorder,
) -> None:
    failing_at_once = sdk(make_app(app_config(), FakeLLM(None, {"fail_after_tokens": 0})))
    with pytest.raises(openai.InternalServerError) as raised:
        await failing_at_once.chat.completions.create(model="m", messages=USER, stream=True)
    assert raised.value.body["message"] == "The model failed: RuntimeError: FakeLLM scripted failure"  # type: ignore[index]
    failing_later = make_app(app_config(), FakeLLM(None, {"fail_after_tokens": 2}))
    response = await http(failing_later).post("/chat/completions", json={"messages": USER, "stream": True})
    payloads = events(response.text)
    assert payloads[-1]["error"]["type"] == "server_error" and "[DONE]" not in payloads
    with pytest.raises(openai.APIError, match="scripted failure"):
        stream = await sdk(failing_later).chat.completions.create(model="m", messages=USER, stream=True)
        async for _ in stream:
            pass
    assert recorded.total("voxray_turns", outcome="failed", protocol="chat_completions") == 3


async def test_closing_the_stream_early_cancels_the_generation(recorded: MemoryRecorder) -> None:
    """What Starlette does when the client goes away: the body iterator is closed mid-stream."""
    llm = FakeLLM(None, {"tokens_per_s": 100})
    request = parse_request(json.dumps({"messages": USER, "stream": True}).encode())
    generation = Generation(llm, app_config(), request)
    pieces = generation.pieces()
    first = await anext(pieces)
    body = stream_events(generation, pieces, first, ("chatcmpl-x", 0, "fake-llm"), False)
    assert "role" in await anext(body) and "You" in await anext(body)
    assert llm.stats()["active_generations"] == 1
    await body.aclose()
    assert llm.stats() | {"tokens_generated": 0} == {
        "active_generations": 0,
        "aborted_generations": 1,
        "tokens_generated": 0,
    }
    assert recorded.total("voxray_turns", outcome="cancelled", protocol="chat_completions") == 1
