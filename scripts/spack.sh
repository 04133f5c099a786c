#!/usr/bin/env bash
# Unpacks (once per machine) the real Spack 1.1.0 that tests/spack runs, from
# ../shared/vendor/spack/: Spack itself, its builtin package repository, the
# Mochi repository and the one source archive a Spack 1.x build needs (a local
# mirror).  Works offline: clingo comes from PyPI into a small venv, so Spack
# never bootstraps.
#   bash scripts/spack.sh          prints the cache directory on stdout (the
#                                  last line); CACHE/bin/spack is then a
#                                  ready Spack (config scope CACHE/etc)
# A finished cache is reused (well under a second).  Spack's own caches live
# there too (repository indexes, the concretization cache), so concretizing the
# same recipe again is cheaper.  Exit status: 0 ready or reused, 2 impossible
# here (no vendored Spack, no python3 venv, no clingo wheel), 1 failed.
#   FLOWCEPT_SPACK_CACHE    where (default ~/.cache/flowcept/spack-1.1.0)
#   FLOWCEPT_SPACK_VENDOR   the vendored archives (default ../shared/vendor/spack
#                           beside the clone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
C=${FLOWCEPT_SPACK_CACHE:-${HOME:-/root}/.cache/flowcept/spack-1.1.0}
VENDOR=${FLOWCEPT_SPACK_VENDOR:-$ROOT/../shared/vendor/spack}
ARCHIVES="spack-1.1.0 spack-packages-1e8cf059 mochi-spack-packages-128261a4"

for a in $ARCHIVES; do
  [ -f "$VENDOR/$a.tar.gz" ] || { echo "spack: no vendored $a.tar.gz in $VENDOR (set FLOWCEPT_SPACK_VENDOR)" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "spack: python3 not found" >&2; exit 2; }

# What the cache was made from: the archives, this script, the tools it records.
key=$( { cat "$0"; for a in $ARCHIVES; do sha256sum <"$VENDOR/$a.tar.gz"; done
         python3 -c 'import sys;print(sys.version, sys.base_prefix)'; gcc -dumpfullversion; } | sha256sum | cut -c1-16)
mkdir -p "$(dirname "$C")"
exec 9>"$C.lock"                       # one unpack at a time (the suite and a user may race)
flock -w 900 9 || { echo "spack: timed out waiting for another unpack of $C" >&2; exit 1; }
# Lmod, for the module test (Debian's package; only as root, and only when missing).
if [ ! -f /usr/share/lmod/lmod/init/bash ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q lmod >"$C.lmod.log" 2>&1 ||
    echo "spack: could not install lmod (the module test loads the module without it)" >&2
fi
if [ "$(cat "$C/.complete" 2>/dev/null)" = "$key" ]; then echo "$C"; exit 0; fi

t0=$(date +%s)
echo "spack: unpacking Spack 1.1.0 into $C (once per machine)" >&2
rm -rf "$C"; mkdir -p "$C/etc" "$C/bin"
for a in $ARCHIVES; do tar -xzf "$VENDOR/$a.tar.gz" -C "$C"; done
cp -r "$VENDOR/mirror" "$C/mirror"
log=$C/setup.log
python3 -m venv "$C/venv" >"$log" 2>&1 && "$C/venv/bin/pip" install -q clingo >>"$log" 2>&1 ||
  { tail -5 "$log" >&2; echo "spack: cannot install clingo into $C/venv (see $log)" >&2; exit 2; }

# The Python dependencies of py-flowcept as externals for the real install (a plain
# site-packages tree: Spack's python-venv does not see Debian's dist-packages).
PYXY=$(python3 -c 'import sys;print("%d.%d"%sys.version_info[:2])')
SP=$C/pyext/lib/python$PYXY/site-packages
"$C/venv/bin/pip" install -q --target "$SP" "numpy<2.4" cffi msgpack lmdb orjson google-re2 setuptools wheel pip >>"$log" 2>&1 ||
  { tail -5 "$log" >&2; echo "spack: cannot install the Python externals (see $log)" >&2; exit 1; }
# Debian's python3 reports the posix_local scheme (local/lib/pythonX.Y/dist-packages) and Spack
# puts that on PYTHONPATH for externals: make it the same tree.
mkdir -p "$C/pyext/local/lib/python$PYXY" && ln -sfn "$SP" "$C/pyext/local/lib/python$PYXY/dist-packages"

cat >"$C/etc/config.yaml" <<Y
config:
  install_tree: {root: $C/opt}
  build_stage: [$C/stage]
  source_cache: $C/source-cache
  misc_cache: $C/misc-cache
  build_jobs: 2
Y
printf 'bootstrap:\n  enable: false\n' >"$C/etc/bootstrap.yaml"
printf 'mirrors::\n  local: file://%s/mirror\n' "$C" >"$C/etc/mirrors.yaml"
# Only the builtin repository by default; a caller adds its own with `repos::` in its scope.
printf 'repos::\n  builtin: %s/spack-packages/repos/spack_repo/builtin\n' "$C" >"$C/etc/repos.yaml"
# Solver results are cached by the hash of the problem: the same recipe concretizes again
# without clingo.
# static_analysis prunes what cannot be installed before grounding (a fifth less CPU here).
printf 'concretizer:\n  static_analysis: true\n  concretization_cache: {enable: true, url: %s/concretization-cache}\n' "$C" >"$C/etc/concretizer.yaml"
ver() { "$C/venv/bin/python" -c "import sys;sys.path.insert(0,'$SP');import importlib.metadata as m;print(m.version('$1'))"; }
{ cat <<Y
packages:
  python:
    externals: [{spec: python@$(python3 -c 'import platform;print(platform.python_version())'), prefix: $(python3 -c 'import sys;print(sys.base_prefix)')}]
    buildable: false
  gcc:
    externals:
    - spec: gcc@$(gcc -dumpfullversion) languages:='c,c++'
      prefix: /usr
      extra_attributes: {compilers: {c: $(command -v gcc), cxx: $(command -v g++)}}
    buildable: false
  gmake:
    externals: [{spec: gmake@$(make --version | head -1 | awk '{print $3}'), prefix: /usr}]
Y
} >"$C/etc/packages.yaml"
# The Python externals as a separate scope: only the install uses them (the specs concretize
# from the builtin repository, as on a site without externals).
{ echo "packages:"
  for p in numpy cffi msgpack lmdb orjson google-re2 setuptools wheel pip; do
    echo "  py-$p: {buildable: false, externals: [{spec: py-$p@$(ver $p), prefix: $C/pyext}]}"
  done; } >"$C/pyext/packages.yaml"
cat >"$C/bin/spack" <<W
#!/bin/sh
# Spack 1.1.0 from the flowcept test cache, offline, with its config scope $C/etc.
export SPACK_PYTHON=$C/venv/bin/python SPACK_DISABLE_LOCAL_CONFIG=1 SPACK_USER_CACHE_PATH=$C/user-cache
exec $C/spack/bin/spack -C $C/etc "\$@"
W
chmod +x "$C/bin/spack"
"$C/bin/spack" --version >>"$log" 2>&1 || { tail -5 "$log" >&2; echo "spack: Spack does not start (see $log)" >&2; exit 1; }
# Spack's indexes of the two vendored repositories (providers, tags, patches: every recipe is
# read), built here once rather than by the first test that concretizes.
mkdir -p "$C/etc-index" && printf 'repos::\n  mochi: %s\n  builtin: %s\n' \
  "$C/mochi-spack-packages/spack_repo/mochi" "$C/spack-packages/repos/spack_repo/builtin" >"$C/etc-index/repos.yaml"
"$C/bin/spack" -C "$C/etc-index" python -c 'import spack.repo as r; r.PATH.provider_index; r.PATH.tag_index; r.PATH.patch_index' >>"$log" 2>&1 ||
  { tail -5 "$log" >&2; echo "spack: indexing the repositories failed (see $log)" >&2; exit 1; }

echo "$key" >"$C/.complete"
echo "spack: ready in $(( $(date +%s) - t0 )) s: $C/bin/spack" >&2
echo "$C"
