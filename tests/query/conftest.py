"""The job of a million tasks that the read-path tests ask every way in about:
built once per test run through the real write path (batch frames as a
leader packs them, stored by LmdbStore, then `flowcept compact`), removed
when the run ends (~130 MB of LMDB, ~15 MB of HDF5)."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

MILLION = int(os.environ.get("FC_TEST_MILLION_TASKS", "1000000"))


@pytest.fixture(scope="session")
def million_job():
    """{"run": run dir of job "million" (one store, node0), "h5": its archive, "n": tasks}."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "support"))
    from framegen import build_job_store
    base = tempfile.mkdtemp(prefix="flowcept-million-")
    try:
        run = os.path.join(base, "runs", "million")
        build_job_store(os.path.join(run, "store", "node0"), MILLION, ranks=16, error_rate=0.01)
        h5 = os.path.join(base, "million.h5")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
        r = subprocess.run([sys.executable, "-m", "flowcept", "compact", run, "-o", h5],
                           capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr
        yield {"run": run, "h5": h5, "n": MILLION, "base": base}
    finally:
        shutil.rmtree(base, ignore_errors=True)
