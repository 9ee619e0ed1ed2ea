"""Headless Chromium (Debian's package) driven by Playwright, with a WAV file as its microphone.

Chromium's fake capture device plays the file once (``%noloop``) as the microphone, then
silence; its fake UI grants the microphone without asking. The flags keep it off the
network (this machine has none) and let audio play without a click.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
QUIET_FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str:
    """Debian's Chromium.

    Raises:
        RuntimeError: It is not installed (``scripts/test.sh`` installs it as root).
    """
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise RuntimeError("chromium is not installed: `apt-get install chromium` (scripts/test.sh does)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@asynccontextmanager
async def browser_page(microphone_wav: Path | None, grant_microphone: bool = True) -> AsyncIterator[Any]:
    """A fresh page in headless Chromium.

    Args:
        microphone_wav: The file the microphone plays once; ``None``: Chromium's fake beep.
        grant_microphone: Grant the microphone without asking; ``False`` denies it, as a
            user clicking "Block" would.
    """
    from playwright.async_api import async_playwright

    args = [*QUIET_FLAGS, "--use-fake-device-for-media-stream"]
    if grant_microphone:
        args.append("--use-fake-ui-for-media-stream")
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav}%noloop")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=args)
        try:
            # bypass_csp: the page forbids eval, which wait_for_function uses to poll a condition.
            context = await browser.new_context(viewport={"width": 1100, "height": 720}, bypass_csp=True)
            page = await context.new_page()
            page.console_messages = []  # type: ignore[attr-defined]
            page.on("console", lambda message: page.console_messages.append(message.text))  # type: ignore[attr-defined]
            yield page
        finally:
            await browser.close()
