"""Real Spack 1.1.0, offline, for the recipe in spack/: unpacked once per machine by
scripts/spack.sh from ../shared/vendor/spack (a cache in ~/.cache/flowcept/spack-1.1.0 that also
keeps Spack's repository indexes and concretization cache between runs).

One session fixture, ``spack_stage``, does the slow work once, in three Spack jobs side by side:
the ``spack spec`` of the variants without the Mochi repository; ``spack audit`` and the
``+mofka`` spec with it; and a real ``spack install`` of ``py-flowcept@main~mpi~hdf5`` from this
checkout into a temporary tree, ``spack test run`` and Lmod and Tcl module files
(``concretized`` and ``installed`` hand the results to the tests).  The tests skip only where the
vendored Spack is absent.

Not exercised here: building the +mpi, +hdf5, +redis or +mofka variants (their dependencies'
sources cannot be fetched offline; they are concretized only), and the recipe's install-time
refusal of ^mofka~python (its check, mofka_python_problem, runs on real Spack specs).
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(os.environ.get("FLOWCEPT_SPACK_VENDOR") or ROOT.parent / "shared" / "vendor" / "spack")
CONCRETIZE = Path(__file__).resolve().parent / "concretize.py"

# Concretized without the Mochi repository (only +mofka needs it: the "!" spec must fail).
# ("py-flowcept+mofka" alone is refused too, as "unsatisfiable" after a 30 s solve; naming the
# missing package fails at once.)
PLAIN_SPECS = ["py-flowcept", "py-flowcept~mofka", "py-flowcept~mpi~hdf5",
               "py-flowcept+redis~mpi~hdf5", "!py-flowcept+mofka ^mofka"]
# With it, the MPI pinned as spack/README.md tells sites to; "?" asks the recipe's own check.
MOCHI_SPECS = ["py-flowcept+mofka ^mpich", "?py-flowcept+mofka ^mofka~python",
               "?py-flowcept+mofka ^mofka+python"]
INSTALL_SPEC = "py-flowcept@main~mpi~hdf5"
# every recipe in spack/packages
RECIPES = sorted(p.parent.name for p in (ROOT / "spack" / "packages").glob("*/package.py"))
# Seconds for one Spack step: clingo takes minutes on 2 busy cores (the stage's times are in
# spack/README.md).
STEP_TIMEOUT = 3000


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


class Spack:
    """The cached Spack with extra configuration scopes (later ones win)."""

    def __init__(self, cache, scopes=()):
        self.cache = Path(cache)
        self.scopes = [str(s) for s in scopes]

    def argv(self, *args):
        cmd = [str(self.cache / "bin" / "spack")]
        for s in self.scopes:
            cmd += ["-C", s]
        return cmd + [str(a) for a in args]

    def __call__(self, *args, check=True):
        r = subprocess.run(self.argv(*args), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, cwd=self.cache, env=_clean_env(),
                           timeout=STEP_TIMEOUT)
        if check and r.returncode != 0:
            raise AssertionError(f"spack {' '.join(map(str, args))} failed ({r.returncode}):\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r


def _clean_env():
    """The caller's environment without what would leak into Spack's builds (the project venv,
    the test's FLOWCEPT_* settings)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWCEPT_", "PYTHON", "VIRTUAL_ENV", "SPACK_"))}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.fixture(scope="session")
def spack_cache():
    if not (VENDOR / "spack-1.1.0.tar.gz").is_file():
        pytest.skip(f"no vendored Spack in {VENDOR} (set FLOWCEPT_SPACK_VENDOR)")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "spack.sh")], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"scripts/spack.sh failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return Path(r.stdout.split()[-1])


@pytest.fixture(scope="session")
def scopes(spack_cache, tmp_path_factory):
    """Configuration scopes: the repositories with and without Mochi."""
    base = tmp_path_factory.mktemp("spack-scopes")
    builtin = spack_cache / "spack-packages" / "repos" / "spack_repo" / "builtin"
    mochi = spack_cache / "mochi-spack-packages" / "spack_repo" / "mochi"
    return {
        "plain": _write(base / "plain" / "repos.yaml",
                        f"repos::\n  flowcept: {ROOT / 'spack'}\n  builtin: {builtin}\n"),
        "mochi": _write(base / "mochi" / "repos.yaml",
                        f"repos::\n  flowcept: {ROOT / 'spack'}\n  mochi: {mochi}\n"
                        f"  builtin: {builtin}\n"),
    }


def _concretize(spack, specs, work, name):
    """Runs concretize.py on ``specs`` in one Spack process; {spec text: result}."""
    out, log = work / f"{name}.json", work / f"{name}.log"
    r = spack("python", CONCRETIZE, out, *specs, check=False)
    log.write_text(r.stdout + r.stderr)
    assert r.returncode == 0, f"spack python concretize.py ({name}) failed:\n{log.read_text()[-4000:]}"
    results = {r["spec"]: r for r in json.loads(out.read_text())}
    for r in results.values():
        if "cpu_s" in r:
            print(f"\nspack spec {r['spec']}: {r['wall_s']} s ({r['cpu_s']} s CPU)", file=sys.stderr)
    return results


def _plain_lane(spack_cache, scopes, work):
    return _concretize(Spack(spack_cache, [scopes["plain"]]), PLAIN_SPECS, work, "plain")


def _mochi_lane(spack_cache, scopes, work):
    mochi = Spack(spack_cache, [scopes["mochi"]])
    # with every repository the recipes name: audit checks that each depends_on exists
    results = {"audit": mochi("audit", "packages", *RECIPES, check=False), "audited": RECIPES}
    results.update(_concretize(mochi, MOCHI_SPECS, work, "mochi"))
    return results


def _install_lane(spack_cache, scopes, work):
    """A real install of INSTALL_SPEC from this checkout, with the Python dependencies as
    externals (their sources cannot be fetched offline), its ``spack test run``, and the Lmod and
    Tcl module files Spack generates for it."""
    scope = work / "scope"
    _write(scope / "config.yaml",
           f"config:\n  install_tree: {{root: {work / 'opt'}}}\n  build_stage: [{work / 'stage'}]\n"
           f"  test_stage: {work / 'test-stage'}\n")
    _write(scope / "modules.yaml",
           f"modules:\n  default:\n    roots: {{lmod: {work / 'lmod'}, tcl: {work / 'tcl'}}}\n"
           f"    enable: [lmod, tcl]\n")
    env = _write(work / "env" / "spack.yaml",
                 f"spack:\n  specs: [{INSTALL_SPEC}]\n"
                 f"  develop: {{py-flowcept: {{spec: py-flowcept@main, path: {ROOT}}}}}\n"
                 f"  concretizer: {{unify: true}}\n  view: false\n")
    spack = Spack(spack_cache, [scopes["plain"], spack_cache / "pyext", scope])
    times = {}
    try:
        t = time.time()
        spack("-e", env, "install", "--no-cache")
        times["install_s"] = round(time.time() - t, 1)
        prefix = Path(spack("-e", env, "location", "-i", "py-flowcept").stdout.strip())
        t = time.time()
        run = spack("-e", env, "test", "run", "py-flowcept", check=False)
        results = spack("-e", env, "test", "results", "-l", check=False)
        times["test_run_s"] = round(time.time() - t, 1)
        t = time.time()
        for kind in ("lmod", "tcl"):
            spack("-e", env, "module", kind, "refresh", "-y")
        times["modules_s"] = round(time.time() - t, 1)
    finally:
        # Spack links its build directory into a develop checkout (build-<arch>-<hash>).
        for link in ROOT.glob("build-linux-*"):
            if link.is_symlink() and str(work) in os.readlink(link):
                link.unlink()
    print(f"\nspack install: {times}", file=sys.stderr)
    return {"prefix": prefix, "run": run, "results": results, "times": times,
            "lmod_root": work / "lmod", "tcl_root": work / "tcl"}


@pytest.fixture(scope="session")
def spack_stage(spack_cache, scopes, tmp_path_factory):
    """The three independent Spack jobs side by side (clingo is single-threaded; the install
    is mostly waiting on pip and make): concretizing without the Mochi repository, auditing and
    concretizing with it, and the install.  {lane: Future}."""
    pool = ThreadPoolExecutor(max_workers=3)
    t0 = time.time()
    lanes = {name: pool.submit(fn, spack_cache, scopes, tmp_path_factory.mktemp(f"spack-{name}"))
             for name, fn in (("plain", _plain_lane), ("mochi", _mochi_lane),
                              ("install", _install_lane))}
    pool.shutdown(wait=False)
    yield lanes
    wait(lanes.values())
    print(f"\nspack stage: {time.time() - t0:.0f} s", file=sys.stderr)


@pytest.fixture(scope="session")
def concretized(spack_stage):
    """{"audit": CompletedProcess, "audited": recipe names, spec text: what concretize.py
    recorded}."""
    return {**spack_stage["plain"].result(), **spack_stage["mochi"].result()}


@pytest.fixture(scope="session")
def installed(spack_stage):
    """{"prefix", "run" and "results" (of spack test run), "lmod_root", "tcl_root", "times"}."""
    return spack_stage["install"].result()


def pytest_collection_modifyitems(items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            # the session fixtures run inside the first test that needs them
            item.add_marker(pytest.mark.timeout(3 * STEP_TIMEOUT))


def lmod_init():
    """Debian's Lmod (scripts/spack.sh installs it as root), or a failure naming the fix."""
    init = Path("/usr/share/lmod/lmod/init/bash")
    if not init.is_file():
        pytest.fail("Lmod is not installed: run `apt-get install -y lmod` as root "
                    "(scripts/spack.sh does when run as root)")
    return init


@pytest.fixture
def login_shell(tmp_path):
    """run(script): ``script`` in bash with a bare environment, as a batch job step starts
    (Lmod's init, then the script); returns the CompletedProcess."""
    return lambda script: _in_login_shell(script, tmp_path)


def _in_login_shell(script, home):
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "USER": os.environ.get("USER", "root")}
    full = f". {lmod_init()}\nset -e\n{script}\n"
    # in HOME, not in the checkout: python -c would import flowcept from the working directory
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", full], capture_output=True,
                          text=True, env=env, cwd=home, stdin=subprocess.DEVNULL, timeout=300)
