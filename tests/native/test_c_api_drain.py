"""A C program using the C API under mpiexec, drained live by `flowcept
drain` (the node leader for codes without Python): every record arrives
once, with rank, node and parent links; the rings are removed."""
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from flowcept.query.tasks import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not (shutil.which("make") and shutil.which("gcc") and shutil.which("mpiexec")),
                                reason="needs make, gcc and mpiexec (pip install mpich)")


@pytest.fixture(scope="module")
def c_producer(tmp_path_factory):
    subprocess.run(["make", "-C", os.path.join(ROOT, "csrc")], check=True, capture_output=True, timeout=300)
    exe = str(tmp_path_factory.mktemp("bin") / "c_producer")
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "examples", "c_producer.c"),
                    os.path.join(ROOT, "csrc", "build", "libflowcept.a"), "-lpthread", "-o", exe],
                   check=True, capture_output=True, timeout=120)
    return exe


def start_drain(job, *extra):
    """Starts `flowcept drain` and waits until it has said it is ready."""
    p = subprocess.Popen([sys.executable, "-m", "flowcept", "drain", job, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "leader of job" in p.stderr.readline()
    return p


def test_live_drain_of_a_c_job(c_producer, run_dir):
    # idle-exit: ranks may start up to a second apart on a loaded 2-core machine
    leader = start_drain("cjob", "--exit-when-idle", "2")
    env = dict(os.environ, FLOWCEPT_JOB_ID="cjob")
    out = subprocess.run(["mpiexec", "-n", "3", c_producer, "5000", "abc123"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stdout, stderr = leader.communicate(timeout=60)
    assert leader.returncode == 0, stderr
    assert "drained 30000 records from 3 ring(s)" in stdout
    r = read_records(os.path.join(run_dir, "cjob"))
    recs = r.records
    assert len(recs) == 3 * 5000 * 2
    assert sorted(set(recs["rank"].tolist())) == [0, 1, 2]
    assert set(recs["workflow_id"].tolist()) == {0xABC123}
    assert set(r.node.tolist()) == {socket.gethostname().split(".")[0]}
    assert len(set(zip(recs["rank"].tolist(), recs["task_id"].tolist()))) == len(recs)
    ids = {(int(a), int(b)): act for a, b, act in zip(recs["rank"], recs["task_id"], r.activity)}
    kernels = np.flatnonzero(r.activity == "kernel")
    assert len(kernels) == 15000
    for i in kernels[:200].tolist():
        assert ids[(int(recs["rank"][i]), int(recs["parent_id"][i]))] == "step"
    assert (recs["parent_id"][r.activity == "step"] == 0).all()
    assert r.payloads[kernels[0]][:3] == b"\x81\xa1i"
    shm = os.environ["FLOWCEPT_SHM_DIR"]
    assert not any(f.endswith(".ring") for _, _, fs in os.walk(shm) for f in fs)


def test_drain_stops_on_sigterm_after_a_last_drain(c_producer, run_dir):
    leader = start_drain("cjob2")
    env = dict(os.environ, FLOWCEPT_JOB_ID="cjob2")
    subprocess.run(["mpiexec", "-n", "2", c_producer, "2000"], env=env, check=True, timeout=120)
    leader.send_signal(signal.SIGTERM)
    stdout, _ = leader.communicate(timeout=60)
    assert leader.returncode == 0 and "drained 8000 records" in stdout
    assert len(read_records(os.path.join(run_dir, "cjob2")).records) == 8000
