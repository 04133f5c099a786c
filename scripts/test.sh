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
exec python -m pytest -q -p no:cacheprovider "$@"
