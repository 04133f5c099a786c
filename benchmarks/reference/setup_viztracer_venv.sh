#!/usr/bin/env bash
# Create (idempotently) a separate virtualenv holding VizTracer (a C-level tracer of every
# Python call), the anchor of the capture benchmarks. Its own venv keeps its hooks and
# dependencies away from both ours and flowcept 1.0.3's.
#
#   benchmarks/reference/setup_viztracer_venv.sh   # -> prints the venv's python on the last line
#   FLOWCEPT_VIZTRACER_VENV=/tmp/viz bash benchmarks/reference/setup_viztracer_venv.sh
#   VIZTRACER_VERSION=1.1.1 ...                    # pin a version (default: the latest)
#
# Quiet on success; on failure pip's log is shown.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${FLOWCEPT_VIZTRACER_VENV:-$root/benchmarks/.viztracer-venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
spec="viztracer${VIZTRACER_VERSION:+==$VIZTRACER_VERSION}"

if [ ! -x "$py" ]; then
    "$python" -m venv "$venv"
fi
# Keep the venv out of git (it lives inside the work tree by default).
[ -f "$venv/.gitignore" ] || printf '*\n' > "$venv/.gitignore"

# numpy: the benchmark's second case passes a 1 MiB array.
if ! "$py" -c "import viztracer, numpy" >/dev/null 2>&1 \
   || { [ -n "${VIZTRACER_VERSION:-}" ] && \
        [ "$("$py" -c 'import viztracer; print(viztracer.__version__)')" != "$VIZTRACER_VERSION" ]; }; then
    log="$(mktemp)"
    if ! "$py" -m pip install --disable-pip-version-check -q "$spec" numpy >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "setup_viztracer_venv: pip install failed" >&2
        exit 1
    fi
    rm -f "$log"
fi

echo "$py"
