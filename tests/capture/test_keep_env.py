"""FLOWCEPT_KEEP_ENV=yes, as slurm/flowcept-taskprolog.sh documents it: the
prolog leaves the job's own directories alone, and capture runs with the
variable set (a warning at most, never an error in the user's code)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROLOG = os.path.join(ROOT, "slurm", "flowcept-taskprolog.sh")


def run_prolog(tmp_path, **env):
    conf = tmp_path / "epilog.conf"
    conf.write_text(f"FLOWCEPT_EPILOG_PYTHON={sys.executable}\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCEPT_", "SLURM_"))}
    e.update(SLURM_JOB_ID="77", FLOWCEPT_EPILOG_CONF=str(conf), **env)
    out = subprocess.run(["sh", PROLOG], capture_output=True, text=True, timeout=60, env=e,
                         cwd=str(tmp_path))
    assert out.returncode == 0
    return out.stdout


@pytest.mark.parametrize("value", ["yes", "YES", "1", "true"])
def test_prolog_keeps_the_jobs_own_env(tmp_path, value):
    assert run_prolog(tmp_path, FLOWCEPT_RUN_DIR="/mine", FLOWCEPT_KEEP_ENV=value) == ""


def test_prolog_exports_without_keep_env(tmp_path):
    out = run_prolog(tmp_path, FLOWCEPT_RUN_DIR="/mine")
    assert "export FLOWCEPT_RUN_DIR=" in out and "export FLOWCEPT_SHM_DIR=" in out


def test_capture_runs_with_keep_env_set(tmp_path, run_dir):
    script = ("from flowcept import flowcept_task, read_tasks\n"
              "@flowcept_task\n"
              "def f(x):\n    return x + 1\n"
              "print('result', f(41))\n")
    env = dict(os.environ, FLOWCEPT_KEEP_ENV="yes", FLOWCEPT_EPILOG_CONF="/nonexistent")
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and "result 42" in out.stdout, out.stderr
    assert "Traceback" not in out.stderr
    from flowcept import read_tasks
    assert [t["generated"] for t in read_tasks(run_dir)] == [{"return": 42}]
