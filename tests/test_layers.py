"""The import contracts (pyproject.toml [tool.importlinter]): a module
imports only from layers below its own (every top-level module is in a layer),
the engine never imports the Flowcept translation (flowcept.compat and
Flowcept's import paths), and backends and adapters never import each other."""
import os
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_run_down_the_data_path():
    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable),
                                                       "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 5      # layers (exhaustive), forbidden, three independence
    assert f"{len(contracts)} kept, 0 broken" in r.stdout
    assert any(c["type"] == "layers" and c.get("exhaustive") for c in contracts)


def test_import_flowcept_loads_no_layer():
    code = ("import sys, flowcept; "
            "print(sorted(m for m in sys.modules if m.startswith('flowcept.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
