"""`pip install .` into a fresh virtualenv gives a wheel that contains the
compiled extensions, and the installed package captures a task.  (Without
cffi in pyproject's build requires the wheel would silently be pure Python.)"""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def test_wheel_has_extensions_and_fresh_venv_imports_them(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), ROOT],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = list(wheels.glob("flowcept-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("flowcept/_flowcept_c") and n.endswith(".so") for n in names), names
    assert any(n.startswith("flowcept/_fastcapture") and n.endswith(".so") for n in names), names
    assert "flowcept/_build_ext.py" in names and "flowcept/mpi/__init__.py" in names
    # the browser UI of `flowcept serve`: its pages ship as package data
    for asset in ("index.html", "app.js", "app.css", "favicon.svg"):
        assert f"flowcept/access/ui/{asset}" in names, names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    code = (
        "import flowcept, flowcept.native, flowcept._fastcapture\n"
        "assert flowcept.__file__.startswith(%r), flowcept.__file__\n"
        "from flowcept import Flowcept, flowcept_task, read_tasks\n"
        "@flowcept_task\n"
        "def f(x): return x + 1\n"
        "with Flowcept(run_dir='runs', shm_dir='shm'):\n"
        "    f(1)\n"
        "(t,) = read_tasks('runs')\n"
        "from flowcept.access.ui import assets\n"
        "assert b'app.js' in assets()['index.html'][0]\n"
        "assert t['used'] == {'x': 1} and t['generated'] == {'return': 2}, t\n"
        "print('ok')\n" % str(venv))
    (tmp_path / "shm").mkdir(exist_ok=True)   # the autouse fixture may have made it
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    out = subprocess.run([py, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
