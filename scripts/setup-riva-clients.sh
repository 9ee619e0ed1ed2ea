#!/usr/bin/env bash
# Installs the real NVIDIA Riva Python client (`nvidia-riva-client` from PyPI, unmodified) in two
# venvs of its own, for the tests that run it against voxray's Riva gRPC services
# (tests/riva_clients.py):
#   .venv-riva      nvidia-riva-client 2.28.0 (SynthesizeOnline is bidirectional streaming) and the
#                   openai SDK, for tests/clients/riva/seed_gateway_calls.py (seed 002's gateway calls)
#   .venv-riva-old  nvidia-riva-client 2.24.0, the last release whose SynthesizeOnline is
#                   server-streaming (one request, a stream of responses), as in the 2.16.0 that seed
#                   002's gateway locks, with that lock's openai 2.14.0 for the same script
# The CLIs (transcribe_file.py, riva_streaming_asr_client.py, talk.py) are not in the wheel; they
# are vendored, unmodified, under tests/clients/riva/nvidia/ and need nothing beyond the wheel
# (PyAudio only with --play-audio, --output-device or --list-devices, which the tests never pass).
# Own venvs because they are clients, not parts of voxray: 2.24.0 pins grpcio 1.67.1, which the
# main .venv (grpcio>=1.81) cannot have. Binary wheels only (grpcio, grpcio-tools), so no system
# packages are needed. About 30 s on a fresh run, and nothing when both venvs are up to date (a
# stamp file per venv holding this script's hash, as in scripts/setup-speechmatics-clients.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want=$(sha256sum < scripts/setup-riva-clients.sh | cut -d" " -f1)
cli_dir=tests/clients/riva/nvidia

# Every package of each venv pinned, at the versions the tests ran with. 2.28.0's own ranges
# (grpcio>=1.67.1, protobuf unbounded) are wrong: its generated *_pb2_grpc modules raise
# RuntimeError on grpcio older than 1.81.0, and its *_pb2 modules need protobuf >= 6.33.5.
# openai is the version of the main .venv when this was written.
new_packages=(
  nvidia-riva-client==2.28.0
  grpcio==1.85.3
  grpcio-tools==1.85.1
  protobuf==7.36.2
  setuptools==84.2.1
  websockets==15.0.1
  openai==3.57.0
  annotated-types==0.8.0
  anyio==4.16.0
  h11==0.16.0
  httpcore2==2.16.2
  httpx2==2.16.2
  idna==3.20
  jiter==0.19.0
  pydantic==2.14.4
  pydantic_core==2.50.5
  sniffio==1.3.1
  truststore==0.10.5
  typing-inspection==0.4.5
  typing_extensions==4.16.0
)
# 2.24.0 pins grpcio, grpcio-tools, setuptools and websockets itself; protobuf is what they allow.
old_packages=(
  nvidia-riva-client==2.24.0
  grpcio==1.67.1
  grpcio-tools==1.67.1
  protobuf==5.29.6
  setuptools==78.1.1
  websockets==15.0.1
  openai==2.14.0
  annotated-types==0.8.0
  anyio==4.16.0
  certifi==2026.10.19.post1
  distro==1.9.0
  h11==0.16.0
  httpcore==1.0.9
  httpx==0.29.0
  idna==3.20
  jiter==0.19.0
  pydantic==2.14.4
  pydantic_core==2.50.5
  sniffio==1.3.1
  tqdm==4.70.1
  typing-inspection==0.4.5
  typing_extensions==4.16.0
)

# Proves the client imports with its generated gRPC stubs (grpcio's version check runs at import)
# and which kind of call SynthesizeOnline is, without connecting anywhere.
check='
import sys, grpc, openai, importlib.metadata as m
import riva.client
from riva.client.proto import riva_asr_pb2_grpc, riva_tts_pb2_grpc
stub = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(grpc.insecure_channel("127.0.0.1:9"))
kind = type(stub.SynthesizeOnline).__name__
print("nvidia-riva-client", m.version("nvidia-riva-client"), "grpcio", grpc.__version__,
      "protobuf", m.version("protobuf"), "openai", openai.__version__, "SynthesizeOnline", kind)
if sys.argv[1] not in kind:
    sys.exit(f"SynthesizeOnline is {kind}, expected {sys.argv[1]}")
'

# install_venv VENV STUB_KIND TALK_PY PACKAGES...: (re)installs VENV unless its stamp matches,
# proves the client and openai import (and which SynthesizeOnline it has), and that the vendored
# CLIs and tests/clients/riva/seed_gateway_calls.py start (--help) in it.
install_venv() {
  local venv=$1 kind=$2 talk=$3
  shift 3
  local stamp=$venv/.voxray-install-stamp
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "voxray setup-riva-clients: installing $1 into $venv" >&2
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet --progress-bar off "$@"
  "$venv/bin/python" -c "$check" "$kind" >&2
  local cli
  for cli in "$cli_dir/transcribe_file.py" "$cli_dir/riva_streaming_asr_client.py" "$talk" \
    tests/clients/riva/seed_gateway_calls.py; do
    "$venv/bin/python" "$cli" --help > /dev/null \
      || { echo "voxray setup-riva-clients: $cli --help fails in $venv" >&2; return 1; }
  done
  echo "$want" > "$stamp"
}

install_venv .venv-riva StreamStream "$cli_dir/talk.py" "${new_packages[@]}"
install_venv .venv-riva-old UnaryStream "$cli_dir/r2.24.0/talk.py" "${old_packages[@]}"
