#!/usr/bin/env bash
# Installs the Debian packages that the test suite's real servers come from, when missing:
# prometheus (tests/serve/test_metrics.py scrapes voxray with it), chromium (the browser
# client's tests drive it with Playwright), what PyAudio 0.2.14 (no Linux wheel) needs to
# build from source for the real speechmatics-flow CLI (scripts/setup-flow-client.sh):
# PortAudio's headers, gcc, and Python's headers, and the local TTS voices of the
# live-transcription test set (espeak-ng, flite, sox). Needs root (or sudo);
# without it, it says what to install and the tests that need the package fail saying so.
set -euo pipefail
packages=()
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -e /usr/include/portaudio.h ] || packages+=(portaudio19-dev)
# Local TTS engines with distinct voices for the live-transcription test set (bench/dialogues.py:
# the diarization tests and benchmark speak with several voices), and sox.
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
command -v flite >/dev/null 2>&1 || packages+=(flite)
command -v sox >/dev/null 2>&1 || packages+=(sox)
command -v gcc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
# Python.h of the interpreter the venvs are made with; only Debian's own python3 gets them
# from python3-dev (a pyenv or /usr/local build ships its own).
if ! "${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  packages+=(python3-dev)
fi
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "voxray setup: please install the Debian packages: ${packages[*]} (needs root)" >&2
  exit 0
fi
echo "voxray setup: installing Debian packages: ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package lists on a fresh machine may be missing or stale: update once if the install fails.
if ! "${apt[@]}" install -y -q --no-install-recommends "${packages[@]}" >/tmp/voxray-apt.log 2>&1; then
  "${apt[@]}" update -q >>/tmp/voxray-apt.log 2>&1
  "${apt[@]}" install -y -q --no-install-recommends "${packages[@]}" >>/tmp/voxray-apt.log 2>&1 \
    || { tail -20 /tmp/voxray-apt.log >&2; exit 1; }
fi
