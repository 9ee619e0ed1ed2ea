#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite. Extra arguments go to pytest.
# Exits non-zero when any test fails, and when no test ran (pytest's exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -ra "${@:-tests}"
