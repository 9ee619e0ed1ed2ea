#!/usr/bin/env bash
# Installs the two real Speechmatics real-time clients from PyPI, unmodified, each in a venv of
# its own, for the tests that run them against voxray's /v2 (tests/speechmatics_clients.py):
#   .venv-sm-cli  speechmatics-python 5.0.0.post1: the `speechmatics rt transcribe` CLI
#   .venv-sm-sdk  speechmatics-rt 1.2.1: the AsyncClient SDK (no CLI; tests/sm_sdk_driver.py runs it)
# Own venvs because they are clients, not parts of voxray: their websockets and httpx must not
# move the main .venv's. Pure-Python wheels only, so no system packages are needed. A few seconds
# on a fresh run, and nothing when both venvs are up to date (a stamp file per venv holding this
# script's hash, as in scripts/setup-flow-client.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want=$(sha256sum < scripts/setup-speechmatics-clients.sh | cut -d" " -f1)

# Every package of each venv pinned, at the versions the tests ran with: the clients' own ranges
# (websockets>=10, httpx[http2]~=0.23, typing-extensions>=4.5) would otherwise drift.
cli_packages=(
  speechmatics-python==5.0.0.post1
  websockets==17.4
  httpx==0.29.0
  httpcore==1.0.9
  h11==0.16.0
  h2==4.4.1
  hpack==4.2.0
  hyperframe==6.1.0
  anyio==4.16.0
  idna==3.20
  certifi==2026.10.19.post1
  polling2==0.5.0
  tenacity==8.2.3
  toml==0.10.2
  typing_extensions==4.16.0
)
sdk_packages=(
  speechmatics-rt==1.2.1
  websockets==17.4
  typing_extensions==4.16.0
)

# install_venv VENV CHECK PACKAGES...: (re)installs VENV unless its stamp matches, then runs the
# Python snippet CHECK in it to prove the client imports.
install_venv() {
  local venv=$1 check=$2
  shift 2
  local stamp=$venv/.voxray-install-stamp
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "voxray setup-speechmatics-clients: installing $1 into $venv" >&2
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet --progress-bar off "$@"
  "$venv/bin/python" -c "$check" >&2
  echo "$want" > "$stamp"
}

install_venv .venv-sm-cli \
  'import speechmatics.cli, importlib.metadata as m; print("speechmatics-python", m.version("speechmatics-python"))' \
  "${cli_packages[@]}"
[ -x .venv-sm-cli/bin/speechmatics ] || { echo "voxray setup: .venv-sm-cli has no speechmatics CLI" >&2; exit 1; }
install_venv .venv-sm-sdk \
  'import speechmatics.rt, importlib.metadata as m; print("speechmatics-rt", m.version("speechmatics-rt"))' \
  "${sdk_packages[@]}"
