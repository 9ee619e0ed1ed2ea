#!/usr/bin/env bash
# Installs the real Speechmatics Flow CLI (`speechmatics-flow` 0.1.2 from PyPI, unmodified) into
# its own venv, .venv-flow, for tests/serve/test_flow_cli.py (through tests/flow_cli.py). It has
# a venv of its own because it pins websockets<=13.1, which the main .venv cannot have.
# PyAudio 0.2.14 has no Linux wheel and builds from source here: it needs portaudio19-dev, gcc
# and Python's headers (scripts/setup-system.sh installs them). About 15 s on a fresh run, and
# nothing when the venv is already up to date (a stamp file, as in scripts/setup-engines.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
venv=.venv-flow
stamp=$venv/.voxray-install-stamp
# The CLI and its dependencies, pinned: as the CLI pins them (httpx, pyaudio), the newest its
# range allows (websockets>=10,<=13.1), and a tested version where it has no bound (dotenv).
packages=(
  speechmatics-flow==0.1.2
  pyaudio==0.2.14
  websockets==13.1
  httpx==0.27.1
  python-dotenv==1.2.1
)
want=$(sha256sum < scripts/setup-flow-client.sh | cut -d" " -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -e /usr/include/portaudio.h ]; then
  echo "voxray setup-flow-client: PortAudio's headers are missing (Debian: portaudio19-dev," \
    "installed by scripts/setup-system.sh); PyAudio cannot build without them" >&2
  exit 1
fi
echo "voxray setup-flow-client: installing speechmatics-flow into $venv" >&2
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --progress-bar off "${packages[@]}"
# Proves that PyAudio was built against PortAudio and that the CLI imports.
"$venv/bin/python" -c 'import pyaudio, speechmatics_flow.cli; print(pyaudio.get_portaudio_version_text())' >&2
echo "$want" > "$stamp"
