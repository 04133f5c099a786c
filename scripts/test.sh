#!/usr/bin/env bash
# The whole test suite: C tests (plain, ASan, TSan, run from pytest) and
# every Python test, including real mpiexec, redis-server and SLURM runs.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "${VENV:-$ROOT/.venv}/bin/activate"
cd "$ROOT"
# The live Mofka tests run against a Mochi stack built from ../shared/vendor (about
# 11 minutes on 2 cores, once per machine; reused afterwards).
if [ ! -f "${FLOWCEPT_MOCHI_PREFIX:-${HOME:-/root}/.cache/flowcept/mochi-0.8.2}/.complete" ]; then
    echo "flowcept test: building the Mochi stack for the live Mofka tests (once per machine)" >&2
fi
bash "$ROOT/scripts/mochi.sh" "${VENV:-$ROOT/.venv}/bin/python" >/dev/null ||
    echo "flowcept test: the Mochi stack could not be built; the live Mofka tests will skip" >&2
# tests/spack runs the vendored real Spack 1.1.0, unpacked once per machine (scripts/spack.sh).
bash "$ROOT/scripts/spack.sh" >/dev/null ||
    echo "flowcept test: scripts/spack.sh failed; tests/spack will report why" >&2
exec python -m pytest -q -p no:cacheprovider "$@"
