#!/usr/bin/env bash
# Installs what is missing, then starts voxray on the embedded CPU models at
# ws://127.0.0.1:8000/v1/realtime, and its gRPC services (Riva ASR/TTS, VoiceGateway,
# voxray.voice, health) on 127.0.0.1:50051 (the config's grpc_options). Extra arguments go to `serve run` (e.g. another config).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
config=${1:-configs/local.yaml}
shift || true
# Serve's environment (HAProxy mode, user code on the replica's loop, HAProxy's hard-stop
# outlasting session drains): serve_app/serve_env.py says why; a value already set wins.
eval "$(.venv/bin/python -m serve_app.server.serve_env)"
exec .venv/bin/serve run "$config" "$@"
