"""The import contracts (pyproject.toml [tool.importlinter]): a module
imports only from layers below its own, and the engine never imports the
Flowcept translation (flowcept.compat and Flowcept's import paths)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_run_down_the_data_path():
    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable),
                                                       "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_import_flowcept_loads_no_layer():
    code = ("import sys, flowcept; "
            "print(sorted(m for m in sys.modules if m.startswith('flowcept.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
