"""voxray's logs in Serve replicas (Ingress and models): one structured line per turn and per error.

Ray Serve writes its replicas' logs (``ray.serve`` logger) to
``/tmp/ray/session_latest/logs/serve/replica_<app>_<deployment>_<id>.log`` and to stderr,
formatted by the app's ``logging_config`` (``encoding: JSON`` gives one JSON object per
line). The ``voxray`` logger has no handler of its own, so Python would drop its INFO lines;
:func:`attach_to_serve_logs` gives it Serve's handlers, so voxray's lines land in the same
files, with the same format and request context.

Levels: INFO carries one ``turn`` line per assistant turn and one ``error`` line per error
event (ids, timings, outcome: no user content); DEBUG adds the transcripts, the reply text
and the LLM's input messages. ``VOXRAY_LOG_LEVEL`` sets the level (default INFO).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

LOGGER_NAME = "voxray"
LEVEL_ENV = "VOXRAY_LOG_LEVEL"
SERVE_LOGGER_NAME = "ray.serve"

logger = logging.getLogger(LOGGER_NAME)


def attach_to_serve_logs() -> None:
    """Send the ``voxray`` logger's lines through this replica's Serve log handlers.

    Call from a deployment's constructor (Serve has configured its logger by then). Outside
    a replica, where Serve's logger has no handlers, nothing changes. Idempotent.

    Raises:
        ValueError: ``VOXRAY_LOG_LEVEL`` is not a logging level name.
    """
    level_name = os.environ.get(LEVEL_ENV, "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ValueError(f"{LEVEL_ENV}={level_name!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    serve_handlers = logging.getLogger(SERVE_LOGGER_NAME).handlers
    if not serve_handlers:
        return
    logger.handlers = list(serve_handlers)
    logger.propagate = False
    logger.setLevel(level)


def log_event(kind: str, fields: dict[str, Any], level: int = logging.INFO) -> None:
    """One structured line: ``<kind> {json}``.

    The JSON object is in the message so that it survives Serve's TEXT format; with
    ``encoding: JSON`` the fields are also attributes of the record (``voxray_<kind>``).

    Args:
        kind: ``turn``, ``error``, ``turn_text``...
        fields: JSON-serialisable values.
        level: The logging level.
    """
    if logger.isEnabledFor(level):
        text = json.dumps(fields, separators=(",", ":"), default=_plain, ensure_ascii=False)
        logger.log(level, "%s %s", kind, text, extra={f"voxray_{kind}": fields})


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: pydantic models and dataclasses as dicts."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)
