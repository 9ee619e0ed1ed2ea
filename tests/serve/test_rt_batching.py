"""Live transcription on the GPU batching path, on the CPU: concurrent /v2 streams share ASR calls.

The ASR deployment groups concurrent requests to a batching backend with ``@serve.batch``
(NeMo Parakeet on a GPU). Here a batching fake stands in for the model, so what is tested is
the path: several real-time streams' partial and final decodes arriving together are served
in shared batches, and every stream still gets its own words.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from ray import serve

from serve_app.engine.audio.pcm import resample_pcm16
from tests.conftest import deployed_app

APP = "rtbatch"
STREAMS = 4


@pytest.fixture(scope="module")
def rt_url(serve_instance: str) -> Iterator[str]:
    args = {
        "asr": {
            "backend": "fake_batch",
            "options": {"transcripts": ["one stream of words"], "delay_ms": 50, "batch_wait_timeout_s": 0.05},
        },
        "llm": {"backend": "fake"},
        "tts": {"backend": "fake"},
        "speaker": None,
        "transcription": {"ending_grace_s": 0.2, "partial_step_ms": 200},
    }
    with deployed_app(APP, args) as prefix:
        yield f"{serve_instance}{prefix}/v2"


async def stream(url: str, pcm: bytes) -> list[dict[str, Any]]:
    start = {
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
        "transcription_config": {"language": "en", "enable_partials": True},
    }
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        frames = 0
        for offset in range(0, len(pcm), 3200):  # 100 ms frames, in real time
            await ws.send(pcm[offset : offset + 3200])
            frames += 1
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"message": "EndOfStream", "last_seq_no": frames}))
        async for raw in ws:
            messages.append(json.loads(raw))
    return messages


async def test_concurrent_streams_share_asr_batches(
    rt_url: str, make_utterance: Callable[..., bytes]
) -> None:
    speech = make_utterance("Each of these streams says the same thing at once.", lead_silence_s=0.3)
    pcm = resample_pcm16(speech, 24_000, 16_000)
    results = await asyncio.gather(*(stream(rt_url, pcm) for _ in range(STREAMS)))
    for messages in results:
        kinds = [m["message"] for m in messages]
        assert kinds[-1] == "EndOfTranscript" and "Error" not in kinds
        assert "AddPartialTranscript" in kinds
        words = [
            r["alternatives"][0]["content"]
            for m in messages
            if m["message"] == "AddTranscript"
            for r in m["results"]
        ]
        assert " ".join(words) == "one stream of words"
    stats = await serve.get_deployment_handle("ASR", APP).stats.remote()
    assert stats["max_batch"] > 1, stats  # streams' decodes were served together
    assert stats["batches"] < stats["calls"]
