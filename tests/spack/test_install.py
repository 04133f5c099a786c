"""A real ``spack install`` of py-flowcept@main~mpi~hdf5 from this checkout, its stand-alone tests
(``spack test run``), and the module files a site generates from it, loaded with Lmod in a bare
shell as a batch job step would (fixtures in conftest.py)."""
import re

import pytest

# What a user of the module runs: the interpreter and the command line it puts on PATH.
USE = """\
python -c 'import flowcept, flowcept.native, sys; print("imported", flowcept.__file__, sys.executable)'
flowcept --help
"""


def test_install_puts_the_c_library_and_rendered_modules_in_the_prefix(installed):
    prefix = installed["prefix"]
    assert (prefix / "include" / "flowcept.h").is_file()
    assert (prefix / "lib" / "libflowcept.so").is_file()
    for name in ("flowcept.lua", "flowcept.tcl"):
        text = (prefix / "share" / "flowcept" / "modules" / name).read_text()
        assert "@FLOWCEPT_" not in text
        assert str(prefix / "lib" / "python3") in text      # python_platlib, as Spack set it


def test_spack_test_run_passes_every_part(installed):
    out = installed["results"].stdout
    assert installed["run"].returncode == 0, installed["run"].stdout + installed["run"].stderr
    parts = re.findall(r"^PyFlowcept::(\w+) \.+ (\w+)$", out, re.M)
    names = {name for name, _ in parts}
    assert {"test_c_library", "test_cli", "test_python_import",
            "test_query_regex_and_json"} <= names, out
    assert all(status == "PASSED" for _, status in parts), out


def _module_dirs(root):
    """The directories holding module files (Spack nests them by architecture, and Lmod's
    layout under Core)."""
    return sorted({str(p.parent.parent) for p in root.rglob("*/*/*") if p.is_file()})


@pytest.mark.parametrize("kind", ["lmod", "tcl"])
def test_generated_module_gives_python_and_the_cli(installed, kind, login_shell):
    dirs = _module_dirs(installed[f"{kind}_root"])
    assert dirs, f"no py-flowcept {kind} module under {installed[kind + '_root']}"
    r = login_shell(f"module use {' '.join(dirs)}\nmodule load py-flowcept\n{USE}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"imported {installed['prefix']}/lib/python3" in r.stdout
    assert "usage: flowcept" in r.stdout


@pytest.mark.parametrize("scratch", ["", "/scratch/u1"])
@pytest.mark.parametrize("template,name", [("flowcept.lua", "main.lua"), ("flowcept.tcl", "main")])
def test_rendered_site_module_adds_the_run_locations(installed, template, name, scratch,
                                                   login_shell, tmp_path):
    """The recipe's own modules (spack/modules/, rendered into the prefix) on top of the
    generated one, as spack/README.md describes: the runtime accepts what they set."""
    site = tmp_path / "site" / "flowcept"
    site.mkdir(parents=True)
    (site / name).write_text(
        (installed["prefix"] / "share" / "flowcept" / "modules" / template).read_text())
    dirs = " ".join(_module_dirs(installed["lmod_root"]) + [str(tmp_path / "site")])
    script = (f"export SCRATCH={scratch}\nmodule use {dirs}\nmodule load py-flowcept flowcept\n"
              f"{USE}echo HOME=$FLOWCEPT_HOME\n"
              "python -W error::RuntimeWarning -c 'from flowcept.config import load_config; "
              "c = load_config(); print(\"RUN=\" + c.run_dir, \"SHM=\" + c.shm_dir)'\n")
    r = login_shell(script)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = f"{scratch}/flowcept-runs" if scratch else "./flowcept-runs"
    assert f"HOME={installed['prefix']}\n" in r.stdout
    assert f"RUN={run_dir} SHM=/dev/shm" in r.stdout
    assert "usage: flowcept" in r.stdout
