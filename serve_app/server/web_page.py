"""The browser pages' files (``serve_app/web/``), served by the Ingress at ``/``, ``/transcribe``
and ``/web/``.

Plain HTML, CSS and JavaScript: nothing to build. The page's policy allows scripts, styles
and connections to this server only, and the microphone for this origin only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from starlette.responses import Response

WEB_DIR = Path(__file__).parents[1] / "web"  # serve_app/web
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "transcribe.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "transcript.js": "text/javascript; charset=utf-8",
    "worklets.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Permissions-Policy": "microphone=(self)",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=8)
def _read(name: str) -> bytes:
    return (WEB_DIR / name).read_bytes()


PAGES = ("index.html", "transcribe.html")


def page(name: str = "index.html") -> Response:
    """A page: the voice client (``GET /``) or the live captions (``GET /transcribe``)."""
    if name not in PAGES:
        raise ValueError(f"unknown page {name!r}; pages: {PAGES}")
    return Response(_read(name), media_type="text/html; charset=utf-8", headers=HEADERS)


def asset(name: str) -> Response:
    """One of the page's files (``GET /web/<name>``); 404 for anything else."""
    if name not in ASSETS:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)
