"""Static checks of the Spack recipe and the module templates (Spack is not installable here).

package.py is executed with a fake ``spack.package`` module that records every directive, so
the checks see the variants and dependencies exactly as Spack would receive them; the install
hook and run environment are then called against recording fakes.  The Tcl module is evaluated
by a real ``tclsh`` (when present) with stub ``setenv``/``prepend-path`` commands.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPACK = ROOT / "spack"
RECIPE = SPACK / "packages" / "py-flowcept" / "package.py"
LUA = SPACK / "modules" / "flowcept.lua"
TCL = SPACK / "modules" / "flowcept.tcl"

VARIANT_DEFAULTS = {"mpi": True, "redis": False, "mofka": False, "hdf5": True}


# --------------------------------------------------------------------------- fake spack


class _Prefix(str):
    """Like spack.util.prefix.Prefix: attribute access joins a sub-directory."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Prefix(os.path.join(self, name))


def _fake_spack(calls, actions):
    """A ``spack.package`` stand-in: directives append to ``calls``, build helpers to ``actions``."""

    def directive(name):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))

        record.__name__ = name
        return record

    class PythonPackage:
        def __init__(self, prefix, source):
            self.prefix = _Prefix(prefix)
            self.stage = types.SimpleNamespace(source_path=str(source))
            self.spec = {}
            # Spack's PythonExtension.python_platlib: <prefix>/<python's platlib layout>
            self.python_platlib = _Prefix(os.path.join(prefix, "lib64", "python3.11",
                                                       "dist-packages"))

    def run_after(phase, when=None):
        def deco(fn):
            fn._run_after = phase
            return fn

        return deco

    class working_dir:
        def __init__(self, path, create=False):
            self.path = path

        def __enter__(self):
            self.old = os.getcwd()
            os.chdir(self.path)

        def __exit__(self, *exc):
            os.chdir(self.old)

    def install(src, dest):
        actions.append(("install", str(src), str(dest)))

    def mkdirp(*paths):
        actions.append(("mkdirp",) + tuple(str(p) for p in paths))
        for p in paths:            # like Spack's: the directories exist afterwards
            os.makedirs(p, exist_ok=True)

    def make(*args, **kwargs):
        actions.append(("make",) + args)

    mod = types.ModuleType("spack.package")
    for name in ("version", "variant", "depends_on", "conflicts", "extends", "provides",
                 "maintainers", "license", "patch", "resource", "requires"):
        setattr(mod, name, directive(name))
    mod.PythonPackage = PythonPackage
    mod.run_after = run_after
    mod.run_before = run_after
    mod.on_package_attributes = lambda **kw: (lambda fn: fn)
    mod.working_dir = working_dir
    mod.install = install
    mod.mkdirp = mkdirp
    mod.make = make
    mod.join_path = os.path.join
    mod.which = lambda *a, **k: None
    mod.spack_cc = "/spack/env/cc"
    return mod


@pytest.fixture(scope="module")
def recipe():
    calls, actions = [], []
    fake = _fake_spack(calls, actions)
    pkg = types.ModuleType("spack")
    pkg.package = fake
    saved = {k: sys.modules.get(k) for k in ("spack", "spack.package")}
    sys.modules["spack"], sys.modules["spack.package"] = pkg, fake
    try:
        namespace = {"__name__": "spack.pkg.flowcept.py_flowcept", "__file__": str(RECIPE)}
        exec(compile(RECIPE.read_text(), str(RECIPE), "exec"), namespace)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return types.SimpleNamespace(ns=namespace, calls=calls, actions=actions, fake=fake)


def _deps(recipe):
    out = {}
    for name, args, kwargs in recipe.calls:
        if name == "depends_on":
            spec = args[0]
            pkg = re.split(r"[@+~ ^%]", spec, maxsplit=1)[0]
            out.setdefault(pkg, []).append((spec, kwargs.get("when"), kwargs.get("type")))
    return out


# --------------------------------------------------------------------------- recipe


def test_recipe_parses_and_defines_the_class():
    tree = ast.parse(RECIPE.read_text(), filename=str(RECIPE))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == ["PyFlowcept"]
    assert [b.id for b in classes[0].bases if isinstance(b, ast.Name)] == ["PythonPackage"]
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert any(n.module == "spack.package" for n in imports)


def test_repo_namespace():
    text = (SPACK / "repo.yaml").read_text()
    assert re.search(r"^repo:\s*$", text, re.M)
    assert re.search(r"^\s+namespace:\s*['\"]?flowcept['\"]?\s*$", text, re.M)


def test_class_and_metadata(recipe):
    cls = recipe.ns["PyFlowcept"]
    assert issubclass(cls, recipe.fake.PythonPackage)
    assert cls.homepage == "https://github.com/flowcept/flowcept-hpc"
    assert cls.__doc__ and cls.__doc__.strip()
    versions = {args[0]: kwargs for name, args, kwargs in recipe.calls if name == "version"}
    assert versions["main"] == {"branch": "main"}
    assert cls.git.startswith("https://")
    sha = versions["0.1.0"]["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", sha)
    assert "TO FILL AT RELEASE" in RECIPE.read_text()


def test_variants_and_defaults(recipe):
    variants = {args[0]: kwargs for name, args, kwargs in recipe.calls if name == "variant"}
    assert {k: v["default"] for k, v in variants.items()} == VARIANT_DEFAULTS
    assert all(v.get("description") for v in variants.values())


@pytest.mark.parametrize(
    "pkg, when, types_",
    [
        ("python", None, {"build", "run"}),
        ("py-setuptools", None, {"build"}),
        ("py-cffi", None, {"build", "run"}),
        ("py-numpy", None, {"run"}),
        ("py-msgpack", None, {"run"}),
        ("py-lmdb", None, {"run"}),
        ("py-h5py", "+hdf5", {"run"}),
        ("py-mpi4py", "+mpi", {"run"}),
        ("mpi", "+mpi", set()),
        ("py-redis", "+redis", {"run"}),
        ("mofka", "+mofka", set()),
        ("py-mochi-margo", "+mofka", {"run"}),
        ("py-tomli", "^python@:3.10", {"run"}),
    ],
)
def test_dependency(recipe, pkg, when, types_):
    entries = _deps(recipe).get(pkg)
    assert entries, f"no depends_on({pkg!r}...)"
    assert len(entries) == 1, entries
    spec, got_when, got_type = entries[0]
    assert got_when == when, f"{pkg}: when={got_when!r}, expected {when!r}"
    declared = {got_type} if isinstance(got_type, str) else set(got_type or ("build", "link"))
    assert types_ <= declared, f"{pkg}: type={got_type!r}"
    if pkg == "python":
        assert spec == "python@3.9:"


def test_optional_deps_only_under_their_variant(recipe):
    deps = _deps(recipe)
    for pkg in ("py-h5py", "py-mpi4py", "mpi", "py-redis", "mofka", "py-mochi-margo"):
        assert all(when for _, when, _ in deps[pkg]), pkg


def test_install_hook_builds_and_installs_c_library(recipe, tmp_path):
    cls = recipe.ns["PyFlowcept"]
    hooks = {n: f for n, f in vars(cls).items() if getattr(f, "_run_after", None) == "install"}
    assert set(hooks) == {"install_c_library", "install_modules"}
    src = tmp_path / "src"
    (src / "csrc").mkdir(parents=True)
    pkg = cls(str(tmp_path / "prefix"), src)
    recipe.actions.clear()
    hooks["install_c_library"](pkg)
    prefix = str(tmp_path / "prefix")
    make = [a for a in recipe.actions if a[0] == "make"]
    assert make and make[0][1:3] == ("-C", "csrc")
    installs = {(a[1], a[2]) for a in recipe.actions if a[0] == "install"}
    assert ("csrc/flowcept.h", os.path.join(prefix, "include")) in installs
    assert ("csrc/build/libflowcept.so", os.path.join(prefix, "lib")) in installs
    # the Makefile really produces what the hook installs
    makefile = (ROOT / "csrc" / "Makefile").read_text()
    assert re.search(r"^BUILD\s*:=\s*build\s*$", makefile, re.M)
    assert "libflowcept.so" in makefile
    assert (ROOT / "csrc" / "flowcept.h").is_file()


def test_run_environment(recipe, tmp_path):
    cls = recipe.ns["PyFlowcept"]
    pkg = cls(str(tmp_path / "prefix"), tmp_path)
    seen = []

    class Env:
        def set(self, name, value):
            seen.append(("set", name, str(value)))

        def prepend_path(self, name, value):
            seen.append(("prepend", name, str(value)))

        append_path = prepend_path

    pkg.setup_run_environment(Env())
    prefix = str(tmp_path / "prefix")
    assert ("set", "FLOWCEPT_HOME", prefix) in seen
    for var, sub in (("PATH", "bin"), ("CPATH", "include"), ("LIBRARY_PATH", "lib"),
                     ("LD_LIBRARY_PATH", "lib")):
        assert ("prepend", var, os.path.join(prefix, sub)) in seen, var


def test_standalone_tests_defined(recipe):
    cls = recipe.ns["PyFlowcept"]
    tests = [n for n in vars(cls) if n.startswith("test_") and callable(getattr(cls, n))]
    assert tests
    assert all(getattr(cls, n).__doc__ for n in tests)


# --------------------------------------------------------------------------- modules


def test_lua_module_sets_runtime_environment():
    text = LUA.read_text()
    assert re.search(r'setenv\(\s*"FLOWCEPT_SHM_DIR"\s*,\s*"/dev/shm"\s*\)', text)
    assert re.search(r'setenv\(\s*"FLOWCEPT_RUN_DIR"\s*,\s*pathJoin\(\s*scratch\s*,\s*"flowcept-runs"', text)
    assert re.search(r'setenv\(\s*"FLOWCEPT_RUN_DIR"\s*,\s*"\./flowcept-runs"\s*\)', text)
    assert 'os.getenv("SCRATCH")' in text
    for var in ("PATH", "CPATH", "LIBRARY_PATH", "LD_LIBRARY_PATH"):
        assert re.search(r'prepend_path\(\s*"%s"\s*,\s*pathJoin\(\s*prefix' % var, text), var
    assert re.search(r'prepend_path\(\s*"PYTHONPATH"\s*,\s*platlib\s*\)', text)
    assert re.search(r'^local prefix\s*=', text, re.M)
    assert re.search(r'^local platlib\s*=\s*"@FLOWCEPT_PLATLIB@"', text, re.M)
    # balanced brackets/parentheses: a cheap syntax sanity check without a Lua interpreter
    body = re.sub(r"\[\[.*?\]\]", "", text, flags=re.S)
    body = re.sub(r'"[^"\n]*"', '""', body)
    body = re.sub(r"--[^\n]*", "", body)
    assert body.count("(") == body.count(")")
    assert len(re.findall(r"\bif\b", body)) == len(re.findall(r"\bend\b", body))


def _rendered(recipe, tmp_path):
    """Runs the recipe's install_modules hook on a copy of spack/modules/ and returns
    (prefix, platlib, {name: rendered text})."""
    cls = recipe.ns["PyFlowcept"]
    src = tmp_path / "src"
    shutil.copytree(SPACK / "modules", src / "spack" / "modules")
    prefix = tmp_path / "opt" / "py-flowcept-0.1.0-abcdef"
    pkg = cls(str(prefix), src)
    cls.install_modules(pkg)
    out = prefix / "share" / "flowcept" / "modules"
    return str(prefix), str(pkg.python_platlib), {p.name: p.read_text() for p in out.iterdir()}


def test_module_templates_have_no_hard_coded_site_packages():
    for path in (LUA, TCL):
        text = path.read_text()
        assert "site-packages" not in re.sub(r"(--|#)[^\n]*", "", text), path
        assert "@FLOWCEPT_PREFIX@" in text and "@FLOWCEPT_PLATLIB@" in text, path


def test_install_renders_modules_with_python_platlib(recipe, tmp_path):
    prefix, platlib, mods = _rendered(recipe, tmp_path)
    assert set(mods) == {"flowcept.lua", "flowcept.tcl"}
    assert "lib64" in platlib and platlib.endswith("dist-packages")
    for name, text in mods.items():
        assert "@FLOWCEPT_" not in text, name
        assert prefix in text and platlib in text, name
    assert re.search(r'^local platlib\s*=\s*"%s"' % re.escape(platlib), mods["flowcept.lua"], re.M)
    assert re.search(r'prepend_path\(\s*"PYTHONPATH"\s*,\s*platlib\s*\)', mods["flowcept.lua"])


def _eval_tcl(env, module=TCL):
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("tclsh not installed: Tcl module checked by pattern only")
    driver = r"""
array set out {}
proc setenv {name value} { global out; set out($name) $value }
proc prepend-path {name value} { global out; lappend out(+$name) $value }
proc append-path {name value} { global out; lappend out(+$name) $value }
proc module-whatis {args} {}
set ModulesCurrentModulefile [lindex $argv 0]
source [lindex $argv 0]
foreach k [lsort [array names out]] { puts "$k=$out($k)" }
"""
    proc = subprocess.run([tclsh, "/dev/stdin", str(module)], input=driver, capture_output=True,
                          text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_tcl_module_sets_runtime_environment():
    text = TCL.read_text()
    assert text.startswith("#%Module")
    assert re.search(r"^\s*setenv\s+FLOWCEPT_SHM_DIR\s+/dev/shm\s*$", text, re.M)
    assert re.search(r"setenv\s+FLOWCEPT_RUN_DIR", text)


def test_tcl_module_evaluates(recipe, tmp_path):
    prefix, platlib, mods = _rendered(recipe, tmp_path)
    module = tmp_path / "flowcept.tcl"
    module.write_text(mods["flowcept.tcl"])
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = _eval_tcl(dict(base, SCRATCH="/scratch/u1"), module)
    assert out["FLOWCEPT_SHM_DIR"] == "/dev/shm"
    assert out["FLOWCEPT_RUN_DIR"] == "/scratch/u1/flowcept-runs"
    assert out["FLOWCEPT_HOME"] == prefix
    assert out["+PATH"] == f"{prefix}/bin"
    assert out["+CPATH"] == f"{prefix}/include"
    assert out["+LIBRARY_PATH"] == out["+LD_LIBRARY_PATH"] == f"{prefix}/lib"
    assert out["+PYTHONPATH"] == platlib        # from the package, not lib/pythonX.Y/...
    out = _eval_tcl(base, module)
    assert out["FLOWCEPT_RUN_DIR"] == "./flowcept-runs"

    # everything FLOWCEPT_* the module sets is accepted by the runtime's configuration
    try:
        from flowcept.config import load_config
    except ImportError as exc:  # pragma: no cover - the runtime is someone else's file
        pytest.skip(f"flowcept.config not importable: {exc}")
    env = {k: v for k, v in out.items() if k.startswith("FLOWCEPT_")}
    cfg = load_config(env=env)
    assert cfg.shm_dir == "/dev/shm" and cfg.run_dir == "./flowcept-runs"


# --------------------------------------------------------------------------- concretizability

INDEX = ROOT.parent / "shared" / "vendor" / "spack" / "package-index.json"
# Dependencies that are not packages of either repository's index, with the reason they resolve.
NOT_INDEXED = {
    "c": "a language virtual (Spack >= 0.23), provided by the compiler packages",
    "gmake": "builtin package, build-only; Spack always has it (not in the vendored index)",
}
_SPEC = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*)(?:@(?P<versions>[^+~ ^%]+))?"
                   r"(?P<variants>(?:\s*[+~][a-z0-9_-]+)*)\s*$")


def _index():
    if not INDEX.is_file():
        pytest.skip(f"no package index at {INDEX} (the vendored facts of ../shared/vendor/spack)")
    import json
    return json.loads(INDEX.read_text())["packages"]


def _vtuple(v):
    """A numeric version as a tuple, or None for a branch name (main, develop, master)."""
    parts = re.split(r"[.-]", v)
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _in_range(version, rng):
    """Spack semantics for numbered versions: a:b is inclusive and b matches b.*; a bare x
    matches x and x.*; open ends are unbounded."""
    v = _vtuple(version)
    if v is None:
        return False
    if ":" not in rng:
        x = _vtuple(rng)
        return v[:len(x)] == x
    lo, hi = rng.split(":", 1)
    if lo and v < _vtuple(lo):
        return False
    if hi:
        h = _vtuple(hi)
        if v[:len(h)] > h:
            return False
    return True


def _satisfying_versions(pkg, versions):
    if not versions:
        return [v["version"] for v in pkg["versions"]]
    return [v["version"] for v in pkg["versions"]
            if any(_in_range(v["version"], r) for r in versions.split(","))]


def _check_spec(index, spec):
    """The versions of the index that satisfy ``spec`` (name@ranges+variants); asserts each
    part of it can be met."""
    m = _SPEC.match(spec.strip())
    assert m, f"spec {spec!r}: not of the form name@versions+variant"
    name = m["name"]
    if name in NOT_INDEXED:
        return ["(not indexed)"]
    pkg = index.get(name)
    assert pkg is not None, f"{spec!r}: no package {name!r} in the builtin or Mochi repository index"
    assert pkg.get("present", True), f"{spec!r}: {name!r} is in neither repository ({pkg.get('repo')})"
    if pkg.get("virtual"):
        assert pkg.get("providers"), f"{spec!r}: virtual {name!r} has no provider"
        assert not m["versions"] and not m["variants"].strip()
        return ["(virtual)"]
    found = _satisfying_versions(pkg, m["versions"])
    assert found, f"{spec!r}: no version of {name} in {m['versions']} (have " \
                  f"{[v['version'] for v in pkg['versions']]})"
    declared = {v["name"]: v for v in pkg.get("variants", [])}
    for var in re.findall(r"[+~]([a-z0-9_-]+)", m["variants"] or ""):
        assert var in declared, f"{spec!r}: {name} has no variant {var!r} (has {sorted(declared)})"
        when = declared[var].get("when")
        if when:
            wm = re.fullmatch(r"@(.+)", when)
            assert wm, when
            found = [v for v in found if any(_in_range(v, r) for r in wm[1].split(","))]
            assert found, f"{spec!r}: variant {var} exists only {when}"
    return found


def test_every_dependency_is_satisfiable_against_the_repositories(recipe):
    index = _index()
    checked = 0
    for name, args, kwargs in recipe.calls:
        if name != "depends_on":
            continue
        _check_spec(index, args[0])
        when = kwargs.get("when")
        if when:
            for cond in when.split():
                if cond.startswith("^"):          # a condition on another package of the DAG
                    _check_spec(index, cond[1:])
        checked += 1
    assert checked >= 12


def test_checker_refuses_what_cannot_concretize():
    index = _index()
    with pytest.raises(AssertionError, match="no version"):
        _check_spec(index, "py-lmdb@1.4:")          # what the recipe used to ask for
    with pytest.raises(AssertionError, match="neither repository"):
        _check_spec(index, "diaspora-stream-api")
    with pytest.raises(AssertionError, match="no variant"):
        _check_spec(index, "mofka+nosuchvariant")
    with pytest.raises(AssertionError, match="exists only"):
        _check_spec(index, "mofka@0.8:+kafka")      # kafka was dropped after 0.6.4
    assert _check_spec(index, "py-lmdb@1.3:") == ["1.3.0"]
    assert "3.10.20" in _check_spec(index, "python@:3.10")
    assert _in_range("0.6.4", "0.6.0:0.6.4") and not _in_range("0.7.0", "0.6.0:0.6.4")
    assert _in_range("1.3.0", "1.3") and not _in_range("1.30", "1.3")


def test_mofka_versions_match_the_supported_client_generations(recipe):
    """The recipe's Mofka range and the transport's refusal of unsupported generations agree:
    0.6.x (pymofka_client) and 0.8+ (diaspora-stream-api >= 0.4); 0.7.0 is refused."""
    index = _index()
    spec = [a[0] for n, a, k in recipe.calls if n == "depends_on" and a[0].startswith("mofka")][0]
    got = set(_check_spec(index, spec))
    assert {"0.6.4", "0.8.2", "0.9.1"} <= got
    assert not got & {"0.7.0", "0.5.3", "0.3.0"}
    # the transport states its range in SUPPORTED (read without importing flowcept)
    tree = ast.parse((ROOT / "flowcept" / "transport" / "mofka.py").read_text())
    supported = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", None) == "SUPPORTED" for t in n.targets)]
    assert supported, "flowcept/transport/mofka.py has no SUPPORTED"
    assert "Mofka 0.6" in supported[0] and "Mofka 0.8" in supported[0]
    assert "0.7" not in supported[0]
