"""Flowcept's own examples (reconstructed in tests/compat/examples) run
unchanged, each in a fresh process and directory, and their queries hold."""
import os
import subprocess
import sys

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLES = sorted(f for f in os.listdir(HERE) if f.endswith(".py"))


def test_all_examples_are_here():
    assert {"start_here.py", "instrumented_simple_example.py",
            "instrumented_loop_example.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_unchanged(name, tmp_path, flowcept_env):
    r = subprocess.run([sys.executable, os.path.join(HERE, name)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # everything went into our store under the configured run_dir, nothing to a server
    assert os.path.isdir(flowcept_env["run_dir"])
