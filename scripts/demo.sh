#!/usr/bin/env bash
# The main job: an MPI run captured end to end on the embedded default
# transport, then an HDF5 archive of it and a summary.
#   RANKS=4 STEPS=200 N=256 bash scripts/demo.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "${VENV:-$ROOT/.venv}/bin/activate"
cd "$ROOT"

RANKS="${RANKS:-4}"
RUN_DIR="${FLOWCEPT_RUN_DIR:-$ROOT/flowcept-runs}"
JOB="${FLOWCEPT_JOB_ID:-demo-$(date +%Y%m%d-%H%M%S)}"
export FLOWCEPT_RUN_DIR="$RUN_DIR" FLOWCEPT_JOB_ID="$JOB"

echo "== 1. capture: mpiexec -n $RANKS python examples/heat2d.py (job $JOB)"
mpiexec -n "$RANKS" python examples/heat2d.py --steps "${STEPS:-200}" --n "${N:-256}"

echo
echo "== 2. compact: $RUN_DIR/$JOB -> $RUN_DIR/$JOB.h5"
flowcept compact "$RUN_DIR/$JOB" -o "$RUN_DIR/$JOB.h5"

echo
echo "== 3. report"
flowcept report "$RUN_DIR/$JOB.h5"          # writes $RUN_DIR/$JOB.report.html
