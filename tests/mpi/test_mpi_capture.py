"""Real mpiexec runs: every record of every rank arrives exactly once, with
the right rank/node/parent fields; killed and failing ranks; concurrent jobs."""
import collections
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from flowcept.query.tasks import read_records, read_tasks, read_workflows

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "apps", "count_app.py")
ROOT = os.path.dirname(os.path.dirname(HERE))
HEAT = os.path.join(ROOT, "examples", "heat2d.py")

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH "
                                 "(pip install mpich mpi4py)")]


def mpirun(n, *args, env_extra=None, timeout=120, check=True):
    env = dict(os.environ)
    env.update(env_extra or {})
    cmd = ["mpiexec", "-n", str(n), sys.executable, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def leftover_rings():
    shm = os.environ["FLOWCEPT_SHM_DIR"]
    # leader status files (flowcept.node.status) outlive their leader by design,
    # so that `flowcept metrics` scrapes the last counts; they are not rings
    return [os.path.join(r, f) for r, _, fs in os.walk(shm) for f in fs
            if ".leaders" not in os.path.relpath(r, shm).split(os.sep)]


@pytest.mark.parametrize("n", [1, 4, 8])
def test_every_record_exactly_once(n, run_dir):
    tasks, children = 60, 3
    mpirun(n, APP, "--tasks", str(tasks), "--children", str(children),
           env_extra={"FLOWCEPT_JOB_ID": f"exact{n}"})
    r = read_records(os.path.join(run_dir, f"exact{n}"))
    recs = r.records
    assert len(recs) == n * tasks * (1 + children)
    ids = recs["workflow_id"].astype(object) * (1 << 64) + recs["task_id"].astype(object)
    assert len(set(ids.tolist())) == len(recs)                       # exactly once
    assert len(np.unique(recs["workflow_id"])) == 1                   # broadcast workflow id
    assert sorted(collections.Counter(recs["rank"].tolist()).items()) == \
        [(k, tasks * (1 + children)) for k in range(n)]
    assert set(r.node.tolist()) == {socket.gethostname().split(".")[0]}
    by_id = {int(t): i for i, t in enumerate(recs["task_id"])}
    acts = r.activity
    for i in np.flatnonzero(acts == "child").tolist():
        parent = by_id[int(recs["parent_id"][i])]
        assert acts[parent] == "outer" and recs["rank"][parent] == recs["rank"][i]
        assert recs["thread_id"][parent] == recs["thread_id"][i]
    assert (recs["parent_id"][acts == "outer"] == 0).all()
    assert (recs["task_id"] >> np.uint64(40) == recs["rank"]).all()     # origin = rank
    wfs = read_workflows(os.path.join(run_dir, f"exact{n}"))
    (doc,) = wfs.values()
    assert doc["name"] == "count" and doc["ranks"] == n and doc["job"] == f"exact{n}"
    assert not leftover_rings()


def test_without_mpi4py_is_its_own_leader(run_dir):
    env = dict(os.environ, FLOWCEPT_JOB_ID="nompi")
    subprocess.run([sys.executable, APP, "--no-mpi", "--tasks", "25"], check=True, timeout=60, env=env)
    recs = read_records(os.path.join(run_dir, "nompi")).records
    assert len(recs) == 25 * 3 and set(recs["rank"].tolist()) == {0}


@pytest.mark.parametrize("victim", [2, 0], ids=["non-leader", "leader"])
def test_killed_rank_records_arrive(tmp_path, run_dir, victim):
    progress = tmp_path / "progress"
    progress.mkdir()
    job = f"killed{victim}"
    out = mpirun(4, APP, "--tasks", "400", "--hold", "0.002", "--progress-dir", str(progress),
                 "--kill-rank", str(victim), "--kill-after", "37",
                 env_extra={"FLOWCEPT_JOB_ID": job, "FLOWCEPT_FINALIZE_TIMEOUT_S": "20"},
                 check=False, timeout=180)
    # the launcher may take the other ranks down too: what they committed
    # stays in their rings (a dead leader publishes nothing more), and
    # recovery -- what the SLURM epilog runs -- drains it
    from flowcept.node.recovery import recover_job
    report = recover_job(job)
    assert report.ok, report.describe()
    recs = read_records(os.path.join(run_dir, job)).records
    per_rank = collections.Counter(recs["rank"].tolist())
    done = {int(p.name): int(p.read_text()) for p in progress.iterdir() if p.name.isdigit()}
    assert done[victim] == 37
    for rank in range(4):
        count = per_rank.get(rank, 0)
        # 3 records per outer task; a rank killed between its push and its
        # progress write may have one more outer task (and its children)
        assert done[rank] * 3 <= count <= (done[rank] + 1) * 3, (rank, count, done, out.stderr[-2000:])
    assert per_rank[victim] == 37 * 3
    assert not leftover_rings()


def test_rank_that_raises_does_not_hang(run_dir):
    out = mpirun(4, HEAT, "--steps", "30", "--fail-rank", "2",
                 env_extra={"FLOWCEPT_JOB_ID": "raises"}, check=False, timeout=120)
    assert out.returncode != 0
    from flowcept.node.recovery import recover_job
    recover_job("raises")
    tasks = read_tasks(os.path.join(run_dir, "raises"))
    errors = [t for t in tasks if t["status"] == "ERROR"]
    assert errors and all(t["rank"] == 2 for t in errors)
    assert any(t["activity_id"] == "timestep" and "failed on purpose" in t["error"]["message"]
               for t in errors)
    (doc,) = read_workflows(os.path.join(run_dir, "raises")).values()
    assert doc["error"]["rank"] == 2


def test_concurrent_jobs_do_not_see_each_other(run_dir):
    env = dict(os.environ)
    procs = []
    for name, tasks in (("jobA", 300), ("jobB", 500)):
        e = dict(env, FLOWCEPT_JOB_ID=name)
        procs.append(subprocess.Popen(["mpiexec", "-n", "3", sys.executable, APP, "--tasks", str(tasks),
                                       "--children", "1"], env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    a = read_records(os.path.join(run_dir, "jobA")).records
    b = read_records(os.path.join(run_dir, "jobB")).records
    assert len(a) == 3 * 300 * 2 and len(b) == 3 * 500 * 2
    assert set(a["workflow_id"].tolist()).isdisjoint(set(b["workflow_id"].tolist()))


START_APP = """
import sys, time
from mpi4py import MPI
from flowcept.mpi import instrument
comm = MPI.COMM_WORLD
if comm.rank == 0:
    time.sleep(0.3)            # rank 0 enters last: the others' tasks must not predate the start
entered = time.time_ns()
with instrument(comm, workflow_name="start") as prov:
    @prov.task
    def f(i):
        return i
    f(comm.rank)
    entries = comm.gather(entered, root=0)
if comm.rank == 0:
    print("earliest", min(entries), "rank0", entered)
"""


@pytest.mark.parametrize("n", [2, 4])
def test_the_workflow_starts_when_the_earliest_rank_entered(n, run_dir):
    out = mpirun(n, "-c", START_APP, env_extra={"FLOWCEPT_JOB_ID": f"start{n}"})
    line = [x for x in out.stdout.splitlines() if x.startswith("earliest")][-1].split()
    earliest, rank0 = int(line[1]), int(line[3])
    (doc,) = read_workflows(os.path.join(run_dir, f"start{n}")).values()
    tasks = read_tasks(os.path.join(run_dir, f"start{n}"))
    assert len(tasks) == n
    assert doc["started_at"] <= min(t["start_ns"] for t in tasks)
    # within the instrument() call of the earliest rank (not rank 0's, 0.3 s later)
    assert earliest <= doc["started_at"] < rank0
