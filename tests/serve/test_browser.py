"""The browser client at ``/``, in headless Chromium against the real Serve app (fake models).

The microphone is a WAV file of synthesized speech (Chromium's fake capture device). The
fake models make the reply long and slow enough to interrupt; the real Silero VAD hears
both utterances. ``tests/models/test_browser_e2e.py`` does the same on the real models.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from serve_app.engine.audio.pcm import write_wav
from tests.browser import browser_page
from tests.conftest import deployed_app
from tests.serve.test_realtime_ws import FAKE_APP_ARGS

APP = "webapp"
FULL_APP = "webfull"
RATE = 24_000


@pytest.fixture(scope="module")
def page_url(serve_instance: str) -> Iterator[str]:
    with deployed_app(APP, FAKE_APP_ARGS) as prefix:
        yield f"{serve_instance.replace('ws://', 'http://', 1)}{prefix}/"


def wav(tmp_path: Path, name: str, pcm16: bytes) -> Path:
    path = tmp_path / f"{name}.wav"
    write_wav(path, pcm16, RATE)
    return path


async def stats(page: Any) -> dict[str, Any]:
    return await page.evaluate("window.voxrayStats")


async def wait_until(page: Any, condition: str, timeout_s: float = 60) -> None:
    """Wait for a JavaScript condition on the page; the failure shows the page's state."""
    try:
        await page.wait_for_function(condition, timeout=timeout_s * 1000)
    except Exception as error:
        state = await stats(page)
        text = await page.inner_text("body")
        raise AssertionError(f"{condition}: {error}\nstats={json.dumps(state)}\npage={text}") from None


def test_the_page_and_its_files_are_served_with_a_strict_policy(page_url: str) -> None:
    with urllib.request.urlopen(page_url) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assert b'src="web/app.js"' in response.read()
    with urllib.request.urlopen(f"{page_url}transcribe") as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        assert b'src="web/transcribe.js"' in response.read()
    for name, kind in (
        ("app.js", "text/javascript"),
        ("worklets.js", "text/javascript"),
        ("common.js", "text/javascript"),
        ("transcript.js", "text/javascript"),
        ("transcribe.js", "text/javascript"),
        ("style.css", "text/css"),
    ):
        with urllib.request.urlopen(f"{page_url}web/{name}") as response:
            assert response.headers["Content-Type"].startswith(kind)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{page_url}web/..%2Fconfig.py")
    assert missing.value.code == 404


@pytest.mark.parametrize("context_rate", [24_000, 48_000])
async def test_a_spoken_question_shows_both_transcripts_and_plays_the_reply(
    page_url: str, make_utterance: Any, tmp_path: Path, context_rate: int
) -> None:
    """At 48 kHz the page resamples both ways (capture to 24 kHz, replies from 24 kHz)."""
    microphone = wav(tmp_path, "question", make_utterance("What is the capital of France?", RATE, 0.5, 3.0))
    async with browser_page(microphone) as page:
        await page.goto(f"{page_url}?sample_rate={context_rate}")
        await page.click("#start")
        await wait_until(
            page, "document.querySelector('.turn.user')?.textContent.includes('capital of France')"
        )
        await wait_until(
            page, "document.querySelector('.turn.assistant')?.textContent.startsWith('You said:')"
        )
        await wait_until(
            page, f"window.voxrayStats.samplesPlayed > {context_rate // 2}"
        )  # half a second heard
        state = await stats(page)
        assert state["chunksReceived"] > 0 and state["state"] in ("speaking", "listening", "thinking")
        assert state["errors"] == [], state["errors"]
        assert await page.is_hidden("#error")


async def test_speaking_over_the_reply_stops_playback_at_once(
    page_url: str, make_utterance: Any, tmp_path: Path
) -> None:
    question = make_utterance("What is the capital of France?", RATE, 0.5, 2.5)
    interruption = make_utterance("Wait, stop.", RATE, 0.0, 2.0)
    microphone = wav(tmp_path, "barge-in", question + interruption)
    async with browser_page(microphone) as page:
        await page.goto(page_url)
        await page.click("#start")
        await wait_until(page, "window.voxrayStats.bargeIns >= 1")
        await wait_until(
            page, "window.voxrayStats.samplesAfterClear !== null && window.voxrayStats.turns.length >= 1"
        )
        state = await stats(page)
        assert state["turns"][0]["status"] == "cancelled"
        assert state["samplesAfterClear"] <= 128  # only the 5 ms fade-out played after the clear
        assert state["truncations"] >= 1  # the server was told how much was heard
        await wait_until(page, "document.querySelector('.turn.assistant.cancelled') !== null")
        assert state["errors"] == [], state["errors"]


async def test_a_denied_microphone_is_explained(page_url: str) -> None:
    async with browser_page(None, grant_microphone=False) as page:
        await page.goto(page_url)
        await page.click("#start")
        await page.wait_for_selector("#error:not([hidden])")
        assert "Microphone permission was denied" in await page.inner_text("#error")
        assert await page.is_visible("#start")


async def test_a_full_server_is_explained(serve_instance: str) -> None:
    args = {**FAKE_APP_ARGS, "limits": {"max_sessions_per_replica": 1}}
    with deployed_app(FULL_APP, args) as prefix:
        await check_full_server_is_explained(serve_instance, prefix)


async def check_full_server_is_explained(serve_instance: str, prefix: str) -> None:
    async with websockets.connect(f"{serve_instance}{prefix}/v1/realtime") as occupant:
        await occupant.recv()  # session.created: the one seat is taken
        async with browser_page(None) as page:
            await page.goto(f"{serve_instance.replace('ws://', 'http://', 1)}{prefix}/")
            await page.click("#start")
            await page.wait_for_selector("#error:not([hidden])")
            await asyncio.sleep(0.5)  # the close follows the error event
            message = await page.inner_text("#error")
            assert "capacity" in message, message
            assert await page.is_visible("#start")
