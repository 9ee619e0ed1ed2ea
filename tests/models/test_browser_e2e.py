"""The browser client on the embedded CPU models: speak into Chromium, hear Rome back.

The app of ``configs/local.yaml`` (Whisper base, Qwen 0.5B, Piper) behind the page at ``/``;
the microphone is Piper's own speech in a WAV file. The page's screenshot in the README is
the one this test takes: ``VOXRAY_UPDATE_SCREENSHOT=1`` writes it to ``tests/fixtures``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.engine.audio.pcm import write_wav
from tests.browser import browser_page
from tests.conftest import FIXTURES, deploy_app
from tests.models.test_e2e_serve import APP, CONFIG, QUESTION, assert_heard
from tests.serve.test_browser import stats, wait_until

pytestmark = pytest.mark.models

RATE = 24_000
SCREENSHOT = FIXTURES / "browser-client.png"


@pytest.fixture(scope="module")
def page_url(serve_instance: str) -> str:
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    return f"{serve_instance.replace('ws://', 'http://', 1)}{deploy_app(APP, args)}/"


@pytest.mark.parametrize("context_rate", [24_000, 48_000])
async def test_speaking_into_the_page_gets_a_spoken_answer(
    page_url: str, make_utterance: Any, tmp_path: Path, context_rate: int
) -> None:
    """At 48 kHz Whisper hears the page's own resampling of the microphone to 24 kHz."""
    microphone = tmp_path / "question.wav"
    write_wav(microphone, make_utterance(QUESTION, RATE, 0.5, 5.0), RATE)
    async with browser_page(microphone) as page:
        await page.goto(f"{page_url}?sample_rate={context_rate}")
        await page.fill("#instructions", "You are a terse assistant. Answer in one short sentence.")
        await page.click("#start")
        # The transcript replaces the "…" shown while the user speaks.
        heard_js = "document.querySelector('.turn.user span')?.textContent ?? '…'"
        await wait_until(page, f"({heard_js}).replace('…', '').trim()", 120)
        # One word may differ between machines, but not "Italy", which the answer turns on.
        assert_heard(QUESTION, await page.inner_text(".turn.user span"), "italy")
        await wait_until(page, "window.voxrayStats.turns.length >= 1", 120)
        await wait_until(page, "window.voxrayStats.state === 'listening'", 60)  # the reply finished playing
        state = await stats(page)
        turn = state["turns"][0]
        assert turn["status"] == "completed", state
        reply = await page.inner_text(".turn.assistant")
        assert "rome" in re.findall(r"[a-z]+", reply.lower()), reply
        assert state["samplesPlayed"] > context_rate // 2 and state["underruns"] == 0, state
        assert 0 < turn["serverFirstAudioMs"] < 10_000 and turn["heardAfterMs"] is not None
        assert state["errors"] == []
        shot = tmp_path / "browser-client.png"
        await page.screenshot(path=str(shot))
        if os.environ.get("VOXRAY_UPDATE_SCREENSHOT") == "1" and context_rate == RATE:
            shutil.copyfile(shot, SCREENSHOT)
