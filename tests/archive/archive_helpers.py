"""Shared helpers of the archive tests: a real MPI run, small synthetic stores."""
import importlib.util
import os
import subprocess
import sys

import msgpack
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_archive", os.path.join(ROOT, "benchmarks", "bench_archive.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_heat2d(base, ranks=4, steps=20, extra=()):
    """mpiexec -n ranks python examples/heat2d.py into base/runs; returns the run dir."""
    run_dir = os.path.join(base, "runs")
    shm = os.path.join(base, "shm")
    os.makedirs(shm, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env["FLOWCEPT_SHM_DIR"] = shm
    env.pop("SLURM_JOB_ID", None)
    subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, os.path.join(ROOT, "examples", "heat2d.py"),
                    "--steps", str(steps), "--n", "64", "--run-dir", run_dir, *extra],
                   check=True, timeout=120, env=env, cwd=base, capture_output=True)
    return run_dir


def write_store(path, recs, payloads, strings, ring_uid, job_id=7, per_batch=50, workflow=None):
    """Writes records into an LMDB store as real batch frames."""
    from flowcept.native.batch import batch_key, build_frame
    from flowcept.record.layout import FLAG_WORKFLOW, RECORD_DTYPE
    from flowcept.store.lmdb import LmdbStore
    st = LmdbStore(path)
    try:
        items = []
        for seq, lo in enumerate(range(0, len(recs), per_batch)):
            hi = min(lo + per_batch, len(recs))
            items.append((batch_key(job_id, ring_uid, seq),
                          build_frame(recs[lo:hi], payloads[lo:hi], strings, job_id=job_id,
                                      ring_uid=ring_uid, seq=seq)))
        if workflow is not None:
            wid, doc = workflow
            wf = np.zeros(1, RECORD_DTYPE)
            wf["workflow_id"], wf["flags"] = wid, FLAG_WORKFLOW
            items.append((batch_key(job_id, ring_uid, 1 << 20),
                          build_frame(wf, [msgpack.packb(doc)], strings, job_id=job_id,
                                      ring_uid=ring_uid, seq=1 << 20)))
        st.put_batches(items)
    finally:
        st.close()


def synth(n, start_id=1, wf=0xABC, rank=0, t0=1_800_000_000_000_000_000):
    from flowcept.record.layout import RECORD_DTYPE
    recs = np.zeros(n, RECORD_DTYPE)
    i = np.arange(n)
    recs["task_id"] = start_id + i
    recs["workflow_id"] = wf
    recs["start_ns"] = t0 + (start_id + i) * 1000
    recs["end_ns"] = recs["start_ns"] + 500 + (i % 7) * 100
    recs["rank"] = rank
    recs["activity_id"] = 1 + i % 2
    recs["flags"] = 1
    pays = [msgpack.packb({"used": {"i": int(start_id + k)}, "generated": {"o": int(start_id + k) * 2}})
            for k in range(n)]
    return recs, pays, ["host:nodeA", "alpha", "beta"]
