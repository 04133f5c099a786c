"""A non-leader rank that ends after its leader's finalize_timeout_s drains
its own ring: a clean run ends with every record stored, nothing left in
shared memory (real mpiexec)."""
import collections
import os
import shutil
import subprocess
import sys

import pytest

from flowcept.query.tasks import read_records

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "apps", "late_rank_app.py")

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH "
                                 "(pip install mpich mpi4py)")]


@pytest.mark.parametrize("late_rank", [1, 3])
def test_late_rank_drains_its_own_ring(run_dir, late_rank):
    n, tasks = 4, 40
    env = dict(os.environ, FLOWCEPT_JOB_ID=f"late{late_rank}", FLOWCEPT_FINALIZE_TIMEOUT_S="1")
    out = subprocess.run(["mpiexec", "-n", str(n), sys.executable, APP, "--tasks", str(tasks),
                          "--late-rank", str(late_rank), "--late-s", "4"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = read_records(os.path.join(run_dir, f"late{late_rank}"))
    per_rank = collections.Counter(r.records["rank"].tolist())
    assert per_rank == {k: 2 * tasks for k in range(n)}, per_rank
    shm = os.environ["FLOWCEPT_SHM_DIR"]
    left = [os.path.join(d, f) for d, _, fs in os.walk(shm) for f in fs]
    assert not [p for p in left if ".ring" in p], left


FULL_APP = os.path.join(HERE, "apps", "full_shm_app.py")


@pytest.mark.parametrize("full_rank", [0, 2])
def test_one_rank_without_room_fails_the_start_everywhere(run_dir, full_rank):
    n = 4
    env = dict(os.environ, FLOWCEPT_JOB_ID=f"full{full_rank}", FLOWCEPT_RING_BYTES=str(1 << 20))
    out = subprocess.run(["mpiexec", "-n", str(n), sys.executable, FULL_APP, "--full-rank",
                          str(full_rank)], capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("rank ")]
    assert len(lines) == n, out.stdout + out.stderr
    assert all("raised CaptureStartError" in ln for ln in lines), lines
    mine = next(ln for ln in lines if ln.startswith(f"rank {full_rank} "))
    assert "shm_dir" in mine
    shm = os.environ["FLOWCEPT_SHM_DIR"]
    left = [f for _, _, fs in os.walk(shm) for f in fs if ".ring" in f]
    assert not left, left
