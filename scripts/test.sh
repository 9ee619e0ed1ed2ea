#!/usr/bin/env bash
# Installs what is missing (Python packages, models, and the Debian packages of the real
# servers some tests start: scripts/setup-system.sh), then runs the whole test suite.
# Extra arguments go to pytest (then only the main venv's run happens). Exits non-zero
# when any test fails, and when no test ran (pytest's exit code 5).
#
# With no arguments it also runs the GPU engines' real code paths on this CPU, each in its
# own venv (scripts/setup-engines.sh): vLLM (tests/models/test_vllm_engine.py) and NeMo
# (tests/models/test_nemo_*.py). There, a missing engine fails instead of skipping
# (VOXRAY_REQUIRE_ENGINES). VOXRAY_SKIP_ENGINES=1 leaves them out.
#
# The real Speechmatics Flow CLI (scripts/setup-flow-client.sh, .venv-flow: about 15 s the first
# time, then nothing), the two real Speechmatics RT clients (scripts/setup-speechmatics-clients.sh,
# .venv-sm-cli and .venv-sm-sdk) and the real NVIDIA Riva clients (scripts/setup-riva-clients.sh,
# .venv-riva and .venv-riva-old: about 30 s the first time) are always installed: the main suite
# runs them as subprocesses (tests/flow_cli.py, tests/speechmatics_clients.py, tests/riva_clients.py),
# and here VOXRAY_REQUIRE_ENGINES includes "flow", "speechmatics" and "riva", so a missing client
# fails its tests; a plain `pytest` skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-system.sh
bash scripts/setup-flow-client.sh \
  || echo "voxray setup: the speechmatics-flow CLI did not install; its tests will fail" >&2
bash scripts/setup-speechmatics-clients.sh \
  || echo "voxray setup: the Speechmatics RT clients did not install; their tests will fail" >&2
bash scripts/setup-riva-clients.sh \
  || echo "voxray setup: the NVIDIA Riva clients did not install; their tests will fail" >&2
export VOXRAY_REQUIRE_ENGINES="${VOXRAY_REQUIRE_ENGINES:+$VOXRAY_REQUIRE_ENGINES,}flow,speechmatics,riva"
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -ra "$@"
fi

status=0
.venv/bin/python -m pytest -q -ra tests || status=$?
if [ "${VOXRAY_SKIP_ENGINES:-0}" != 1 ]; then
  bash scripts/setup-engines.sh
  VOXRAY_REQUIRE_ENGINES=vllm .venv-vllm/bin/python -m pytest -q -ra tests/models/test_vllm_engine.py \
    || status=$((status ? status : $?))
  VOXRAY_REQUIRE_ENGINES=nemo .venv-nemo/bin/python -m pytest -q -ra tests/models/test_nemo_asr.py \
    tests/models/test_nemo_tts.py tests/models/test_nemo_speaker.py || status=$((status ? status : $?))
fi
exit "$status"
