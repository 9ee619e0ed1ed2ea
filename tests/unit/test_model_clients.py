"""The handle wrappers' retry rules, without a Ray cluster.

The fake handles below raise the real Ray exception classes the way Serve does when the
replica actor serving a call is killed (``ActorDiedError``; ``ActorUnavailableError`` with
the gRPC transport), and the way it passes on a model's own error (``RayTaskError`` made an
instance of the model's exception class).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from deployments.types import AudioChunk, ChatMessage, SamplingParams, Transcript
from serve_app.engine.model_clients import (
    ATTEMPTS,
    HandleASR,
    HandleLLM,
    HandleTTS,
    ModelReplicaError,
    is_replica_gone,
)

MESSAGES = [ChatMessage(role="user", content="hi")]
PARAMS = SamplingParams(max_tokens=16, temperature=0.0)


def model_error(message: str = "FakeASR scripted failure") -> Exception:
    """What a caller gets when the deployment's code raised ``RuntimeError(message)``."""
    traceback = f"Traceback (most recent call last):\n  ...\nRuntimeError: {message}"
    return RayTaskError("transcribe", traceback, RuntimeError(message)).as_instanceof_cause()


def unavailable() -> ActorUnavailableError:
    return ActorUnavailableError("Actor is unavailable.", b"\x01" * 16)


class FakeUnaryHandle:
    """``handle.transcribe.remote(...)``: each call plays the next scripted outcome."""

    deployment_name = "ASR"

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    @property
    def transcribe(self) -> FakeUnaryHandle:
        return self

    def remote(self, *args: Any) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1

        async def result() -> Any:
            await asyncio.sleep(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return result()


class FakeResponseGenerator:
    """A ``DeploymentResponseGenerator``: yields ``items``, then raises ``error`` if given."""

    def __init__(self, items: list[Any], error: BaseException | None = None, hang: bool = False) -> None:
        self._items = list(items)
        self._error = error
        self._hang = hang
        self.cancelled = False

    def __aiter__(self) -> FakeResponseGenerator:
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(0)
        if self._items:
            return self._items.pop(0)
        if self._hang:
            await asyncio.Event().wait()
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    def cancel(self) -> None:
        self.cancelled = True


class FakeStreamHandle:
    """``handle.options(stream=True).<method>.remote(...)``: one scripted generator per call."""

    def __init__(self, name: str, *generators: FakeResponseGenerator) -> None:
        self.deployment_name = name
        self.generators = list(generators)
        self.calls = 0
        self.streaming = False

    def options(self, stream: bool = False) -> FakeStreamHandle:
        self.streaming = stream
        return self

    def __getattr__(self, method: str) -> FakeStreamHandle:
        return self

    def remote(self, *args: Any) -> FakeResponseGenerator:
        assert self.streaming
        generator = self.generators[min(self.calls, len(self.generators) - 1)]
        self.calls += 1
        return generator


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


@pytest.mark.parametrize(
    ("exc", "gone"),
    [
        (ActorDiedError(), True),
        (unavailable(), True),
        (model_error(), False),
        # The model called an actor that died: its own failure, not its replica's.
        (RayTaskError("chat", "Traceback: ...", ActorDiedError()).as_instanceof_cause(), False),
        (RuntimeError("boom"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_only_replica_loss_counts_as_gone(exc: BaseException, gone: bool) -> None:
    assert is_replica_gone(exc) is gone


@pytest.mark.parametrize("death", [ActorDiedError, unavailable])
async def test_transcription_is_retried_when_its_replica_dies(
    death: Any, caplog: pytest.LogCaptureFixture
) -> None:
    transcript = Transcript(text="hello", language=None, audio_duration_s=1.0, processing_s=0.1)
    handle = FakeUnaryHandle(death(), transcript)
    with caplog.at_level(logging.WARNING, logger="voxray"):
        result = await HandleASR(handle, backoff_s=0).transcribe(b"\0\0", 16000, None)
    assert result == transcript
    assert handle.calls == 2
    [record] = [r for r in caplog.records if r.name == "voxray"]
    assert "ASR" in record.getMessage()
    assert type(death()).__name__ in record.getMessage()


async def test_model_error_in_transcription_is_not_retried() -> None:
    handle = FakeUnaryHandle(
        model_error(), Transcript(text="x", language=None, audio_duration_s=0, processing_s=0)
    )
    with pytest.raises(RuntimeError, match="FakeASR scripted failure") as raised:
        await HandleASR(handle, backoff_s=0).transcribe(b"\0\0", 16000, None)
    assert not isinstance(raised.value, ModelReplicaError)
    assert handle.calls == 1


async def test_transcription_attempts_are_bounded() -> None:
    handle = FakeUnaryHandle(ActorDiedError())
    with pytest.raises(ModelReplicaError, match="ASR") as raised:
        await HandleASR(handle, backoff_s=0).transcribe(b"\0\0", 16000, None)
    assert handle.calls == ATTEMPTS
    assert isinstance(raised.value.__cause__, ActorDiedError)


async def test_stream_is_restarted_when_its_replica_dies_before_the_first_delta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = FakeResponseGenerator([], ActorDiedError())
    handle = FakeStreamHandle("LLM", dead, FakeResponseGenerator(["Hello", " there"]))
    with caplog.at_level(logging.WARNING, logger="voxray"):
        deltas = await collect(HandleLLM(handle, backoff_s=0).chat(MESSAGES, PARAMS))
    assert deltas == ["Hello", " there"]
    assert handle.calls == 2
    assert any("LLM" in r.getMessage() and "ActorDiedError" in r.getMessage() for r in caplog.records)


async def test_stream_is_not_restarted_once_output_went_out() -> None:
    handle = FakeStreamHandle(
        "LLM", FakeResponseGenerator(["Hello"], ActorDiedError()), FakeResponseGenerator(["again"])
    )
    received: list[str] = []
    with pytest.raises(ModelReplicaError, match="LLM") as raised:
        async for delta in HandleLLM(handle, backoff_s=0).chat(MESSAGES, PARAMS):
            received.append(delta)
    assert received == ["Hello"]  # nothing repeated, nothing from a second replica
    assert handle.calls == 1
    assert isinstance(raised.value.__cause__, ActorDiedError)


async def test_model_error_in_a_stream_is_not_retried() -> None:
    handle = FakeStreamHandle(
        "TTS", FakeResponseGenerator([], model_error("FakeTTS scripted failure")), FakeResponseGenerator([])
    )
    with pytest.raises(RuntimeError, match="FakeTTS scripted failure") as raised:
        await collect(HandleTTS(handle, backoff_s=0).synthesize("hi", None))
    assert not isinstance(raised.value, ModelReplicaError)
    assert handle.calls == 1


async def test_stream_attempts_are_bounded() -> None:
    handle = FakeStreamHandle("TTS", FakeResponseGenerator([], unavailable()))
    with pytest.raises(ModelReplicaError, match=f"TTS.*{ATTEMPTS} attempts"):
        await collect(HandleTTS(handle, backoff_s=0).synthesize("hi", None))
    assert handle.calls == ATTEMPTS


async def test_stopping_early_cancels_the_replica_generator() -> None:
    chunk = AudioChunk(pcm16=b"\0\0", sample_rate=16000)
    generator = FakeResponseGenerator([chunk, chunk, chunk])
    stream = HandleTTS(FakeStreamHandle("TTS", generator)).synthesize("hi", None)
    assert await anext(stream) == chunk
    await stream.aclose()  # e.g. the response was cancelled between two chunks
    assert generator.cancelled


async def test_cancelling_the_consumer_cancels_the_replica_generator() -> None:
    generator = FakeResponseGenerator(["Hello"], hang=True)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in HandleLLM(FakeStreamHandle("LLM", generator)).chat(MESSAGES, PARAMS):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.01)  # now waiting on the replica for the next delta
    task.cancel()  # barge-in
    with pytest.raises(asyncio.CancelledError):
        await task
    assert generator.cancelled
