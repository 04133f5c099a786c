#!/usr/bin/env bash
# Builds (once per machine) the Mochi stack the live Mofka tests run against:
# Mofka 0.8.2, diaspora-stream-api 0.5.2 (with its "simple" backend) and their
# Mochi dependencies, from the source archives in ../shared/vendor/mochi/.
#   bash scripts/mochi.sh [PYTHON]      (PYTHON: whose extension modules to build;
#                                        default: the project's .venv python)
# Prints the prefix on stdout (the last line); `. PREFIX/env.sh` then sets
# PYTHONPATH, LD_LIBRARY_PATH and PATH.  A finished prefix is reused, so the
# second call takes well under a second.  Exit status: 0 built or reused,
# 2 the build is impossible here (no vendored sources, no build packages and
# not root), 1 the build failed (see PREFIX/logs).
#   FLOWCEPT_MOCHI_PREFIX   where to build (default ~/.cache/flowcept/mochi-0.8.2)
#   FLOWCEPT_MOCHI_VENDOR   the vendored sources (default ../shared/vendor/mochi
#                           beside the clone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=${FLOWCEPT_MOCHI_PREFIX:-${HOME:-/root}/.cache/flowcept/mochi-0.8.2}
VENDOR=${FLOWCEPT_MOCHI_VENDOR:-$ROOT/../shared/vendor/mochi}
PY=${1:-${VENV:-$ROOT/.venv}/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)

if [ ! -f "$VENDOR/build.sh" ]; then
  echo "mochi: no vendored Mochi sources at $VENDOR (set FLOWCEPT_MOCHI_VENDOR)" >&2
  exit 2
fi
# A prefix finished by build.sh holds .complete with the sources' checksum and
# the python version; build.sh itself decides whether it is still current.
mkdir -p "$(dirname "$PREFIX")"
# one build at a time per prefix (the test suite and a user may race)
exec 9>"$PREFIX.lock"
if ! flock -w 1800 9; then
  echo "mochi: timed out waiting for another build of $PREFIX" >&2
  exit 1
fi
t0=$(date +%s)
rc=0
bash "$VENDOR/build.sh" "$PREFIX" "$PY" >&2 || rc=$?
if [ "$rc" != 0 ]; then
  echo "mochi: build failed (rc=$rc), logs in $PREFIX/logs" >&2
  exit "$rc"
fi
[ -f "$PREFIX/env.sh" ] || { echo "mochi: $PREFIX/env.sh missing after the build" >&2; exit 1; }
echo "mochi: ready in $(( $(date +%s) - t0 )) s: . $PREFIX/env.sh" >&2
echo "$PREFIX"
