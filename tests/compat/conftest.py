"""Each test reads only its own run directory: forget the run directories
earlier tests' Flowcept objects used (a process remembers them)."""
import pytest


@pytest.fixture(autouse=True)
def _fresh_compat_state(flowcept_env):
    from flowcept.flowcept_api import db
    db.known_run_dirs.clear()
    yield
    db.known_run_dirs.clear()
