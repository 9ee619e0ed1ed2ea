"""The live captions page at ``/transcribe`` on the embedded CPU models, in headless Chromium.

Two-speaker dialogues of distinct synthetic voices (``bench.dialogues``) reach the page as
its microphone (Chromium's fake capture device plays the WAV once), as a picked file and as
a dropped one; the page speaks the Speechmatics real-time protocol to ``/v2``. Whisper may
hear a word differently on another CPU, so the words are checked by a WER bound over each
dialogue, and the speakers only by there being at least two of them. The page's screenshot
in the README is the one the microphone test takes: ``VOXRAY_UPDATE_SCREENSHOT=1`` writes it
to ``tests/fixtures``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.dialogues import Dialogue, build_dialogue
from bench.wer import describe_errors, word_error_rate
from tests.browser import browser_page
from tests.conftest import FIXTURES, deploy_app
from tests.models.test_e2e_serve import APP, CONFIG
from tests.serve.test_browser import wait_until

pytestmark = pytest.mark.models

SCREENSHOT = FIXTURES / "transcribe-page.png"
MAX_WER = 0.25  # per dialogue; measured 6% to 14% (numbers as digits count as errors)
GREY_PARTIAL = "rgb(138, 144, 156)"  # .partial in style.css
BLACK = "rgb(0, 0, 0)"  # .run .words
LINE = re.compile(r"^\[(\d+:\d\d\.\d) – (\d+:\d\d\.\d)\] (S\d+|UU): (.*)$")


@pytest.fixture(scope="module")
def page_url(serve_instance: str) -> str:
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    return f"{serve_instance.replace('ws://', 'http://', 1)}{deploy_app(APP, args)}/transcribe"


@pytest.fixture(scope="module")
def dialogues(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Dialogue]:
    """Two-speaker dialogues 0 to 2, built once and cached with pytest's cache."""
    cache = getattr(request.config, "cache", None)
    directory = cache.mkdir("voxray-dialogues") if cache is not None else tmp_path_factory.mktemp("dialogues")
    return {index: build_dialogue(index, 2, directory) for index in range(3)}


def captions(page: Any) -> Any:
    return page.evaluate("window.voxrayCaptions")


def seconds(time: str) -> float:
    minutes, secs = time.split(":")
    return int(minutes) * 60 + float(secs)


def parse_transcript(text: str) -> list[tuple[float, float, str, str]]:
    """The download's rows as (start_s, end_s, speaker, words); every row after the heading must parse."""
    rows = [line for line in text.splitlines()[1:] if line.strip()]
    parsed = [LINE.match(row) for row in rows]
    assert rows and all(parsed), text
    return [(seconds(m.group(1)), seconds(m.group(2)), m.group(3), m.group(4)) for m in parsed if m]


async def download(page: Any, button: str, suffix: str) -> str:
    async with page.expect_download() as info:
        await page.click(button)
    download = await info.value
    assert download.suggested_filename.endswith(suffix)
    return Path(await download.path()).read_text("utf-8")


async def check_captions(
    page: Any, dialogue: Dialogue, max_speakers: int | None = None
) -> list[tuple[float, float, str, str]]:
    """Words in black per speaker colour, no error, and a download that has the dialogue's
    words (WER bound) from at least two speakers (and at most ``max_speakers``); returns the
    download's rows."""
    state = await captions(page)
    assert state["ended"] and state["errors"] == [], state
    assert state["framesAcknowledged"] == state["framesSent"] > 0, state
    colours = await page.eval_on_selector_all(
        ".run", "runs => runs.map(run => getComputedStyle(run).borderLeftColor)"
    )
    assert len(set(colours)) >= 2, colours
    word_colours = await page.eval_on_selector_all(
        ".run .words", "words => words.map(w => getComputedStyle(w).color)"
    )
    assert set(word_colours) == {BLACK}, word_colours
    assert len(await page.query_selector_all("#legend li")) >= 2
    rows = parse_transcript(await download(page, "#download-text", ".txt"))
    as_json = json.loads(await download(page, "#download-json", ".json"))
    assert [segment["speaker"] for segment in as_json["segments"]] == [row[2] for row in rows]
    assert len(as_json["results"]) >= len(rows) and as_json["language"] == "en"
    speakers = {speaker for *_, speaker, _ in rows if speaker != "UU"}
    assert 2 <= len(speakers) <= (max_speakers or len(speakers)), rows
    reference = " ".join(word.text for word in dialogue.words)
    heard = " ".join(words for *_, words in rows)
    assert word_error_rate(reference, heard) <= MAX_WER, describe_errors([reference], [heard])
    return rows


async def test_a_dialogue_into_the_microphone_gets_live_captions_by_speaker(
    page_url: str, dialogues: dict[int, Dialogue], tmp_path: Path
) -> None:
    dialogue = dialogues[0]
    async with browser_page(dialogue.wav_path) as page:
        await page.goto(page_url)
        await page.fill("#max-speakers", "2")
        await page.click("#start")
        # The fake microphone plays the dialogue once, then silence: stop once it all went out.
        sent_s = "window.voxrayCaptions.framesSent / 10"
        await wait_until(page, f"{sent_s} > {dialogue.duration_s + 1.0}", dialogue.duration_s * 3 + 60)
        await page.click("#stop")
        await wait_until(page, "window.voxrayCaptions.ended", 180)
        state = await captions(page)
        assert state["source"] == "microphone" and state["partials"] >= 1, state
        partial_colour = await page.eval_on_selector("#partial", "p => getComputedStyle(p).color")
        assert partial_colour == GREY_PARTIAL
        await check_captions(page, dialogue, max_speakers=2)
        shot = tmp_path / "transcribe-page.png"
        await page.screenshot(path=str(shot))
        if os.environ.get("VOXRAY_UPDATE_SCREENSHOT") == "1":
            from PIL import Image

            # 128 colours keep the flat page exact enough at about a third of the size.
            Image.open(shot).quantize(colors=128).save(SCREENSHOT, optimize=True)


@pytest.mark.parametrize(("how", "index", "speed"), [("picked", 1, "0"), ("dropped", 2, "4")])
async def test_a_picked_or_dropped_file_is_transcribed_to_the_end(
    page_url: str, dialogues: dict[int, Dialogue], how: str, index: int, speed: str
) -> None:
    """Speed "0" streams as fast as the server acknowledges; "4" paces at 4× real time."""
    dialogue = dialogues[index]
    async with browser_page(None) as page:
        await page.goto(page_url)
        await page.select_option("#speed", speed)
        if how == "picked":
            await page.set_input_files("#file", str(dialogue.wav_path))
        else:
            wav = base64.b64encode(dialogue.wav_path.read_bytes()).decode()
            await page.evaluate(
                """(wav) => {
                    const bytes = Uint8Array.from(atob(wav), (c) => c.charCodeAt(0));
                    const data = new DataTransfer();
                    data.items.add(new File([bytes], "dialogue.wav", { type: "audio/wav" }));
                    document.getElementById("captions").dispatchEvent(
                        new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
                }""",
                wav,
            )
        await wait_until(page, "window.voxrayCaptions.ended", dialogue.duration_s * 3 + 120)
        state = await captions(page)
        # The whole file went out in 100 ms frames (the last one shorter) and was transcribed.
        frames = math.ceil(round(dialogue.duration_s * 16_000) / 1600)
        assert state["source"] == "file" and state["framesSent"] == frames, state
        rows = await check_captions(page, dialogue)
        assert rows[-1][1] >= dialogue.words[-1].start_s - 1.0, (rows[-1], dialogue.words[-1])
