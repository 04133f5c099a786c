"""Helpers for the adapter tests: a capture session of the test, and the
records read back from its store after the session ended."""
import os
import subprocess
import sys

import pytest


@pytest.fixture
def session(run_dir):
    from flowcept.capture import session as runtime
    from flowcept.config import load_config
    s = runtime.start_local_session(load_config())
    yield s
    runtime.end_session()


def read_back(run_dir, prefix=None):
    """Ends the session and returns its task records (activity prefix filter)."""
    from flowcept.capture import session as runtime
    from flowcept.query.tasks import read_tasks
    runtime.end_session()
    tasks = read_tasks(run_dir)
    if prefix is not None:
        tasks = [t for t in tasks if str(t["activity_id"]).startswith(prefix)]
    return tasks


def run_py(code, *args, timeout=120, env=None):
    """Runs python code in another process; returns its stdout (raises on failure)."""
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise AssertionError(f"child failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout
