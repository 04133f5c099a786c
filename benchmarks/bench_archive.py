"""Archive benchmarks: LMDB -> HDF5 compaction speed, statistics scan speed,
archive size per record vs flowcept 1.0.3's JSON-lines buffer.

    python benchmarks/bench_archive.py                 # 2,000,000 records
    python benchmarks/bench_archive.py 10000000 --compression gzip

The synthetic store is written through the real write path
(flowcept.batch.build_frame + LmdbStore.put_batches): ranks x steps of a
``timestep`` parent with ``exchange_halos``/``diffuse``/``residual``
children, msgpack payloads with used/generated values, one workflow record.
Prints one JSON line per measurement on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import msgpack
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

ACTIVITIES = ["timestep", "exchange_halos", "diffuse", "residual"]


def synth_records(n: int, ranks: int = 16, seed: int = 1, t0_ns: int = 1_795_838_200_000_000_000):
    """n task records (RECORD_DTYPE) + payloads + activity names, grouped per rank.

    Returns (records, payloads, strings) for each rank, as a list."""
    from flowcept.layout import RECORD_DTYPE
    rng = np.random.default_rng(seed)
    per_rank = [n // ranks + (1 if r < n % ranks else 0) for r in range(ranks)]
    out = []
    for r, m in enumerate(per_rank):
        recs = np.zeros(m, RECORD_DTYPE)
        i = np.arange(m)
        step, pos = i // 4, i % 4          # 4 records per step: parent + 3 children
        dur = rng.lognormal(mean=np.log([2e5, 4e4, 9e4, 3e4])[pos], sigma=0.4).astype(np.int64)
        base = t0_ns + step * 400_000 + r * 1_000
        start = base + np.array([0, 10_000, 60_000, 160_000])[pos]
        start[pos == 0] = base[pos == 0]
        end = start + dur
        end[pos == 0] = np.maximum(end[pos == 0], start[pos == 0] + 300_000)
        origin = (r + 1) << 40
        recs["task_id"] = origin + i + 1
        recs["parent_id"] = np.where(pos == 0, 0, origin + (step * 4) + 1)
        recs["workflow_id"] = 0x174FD72B81B5E6B1
        recs["start_ns"], recs["end_ns"] = start, end
        recs["rank"] = r
        recs["activity_id"] = 1 + pos    # string 0 is the node
        recs["status"] = 0
        recs["flags"] = 1
        delta = rng.random(m)
        payloads = [msgpack.packb({"used": {"step": int(s), "alpha": 0.1},
                                   "generated": {"delta": float(d)}}, use_bin_type=True)
                    for s, d in zip(step.tolist(), delta.tolist())]
        out.append((recs, payloads))
    return out


def build_store(path: str, n: int, ranks: int = 16, batch_records: int = 8192, node: str = "bench") -> float:
    """Writes a synthetic store with n task records; returns seconds taken."""
    from flowcept.batch import batch_key, build_frame
    from flowcept.layout import FLAG_WORKFLOW, RECORD_DTYPE
    from flowcept.store.lmdb import LmdbStore
    from flowcept.config import load_config
    t = time.perf_counter()
    strings = ["host:" + node] + ACTIVITIES
    job_id = 42
    st = LmdbStore(path, load_config(lmdb_map_size=1 << 38))
    try:
        for r, (recs, pays) in enumerate(synth_records(n, ranks)):
            items = []
            for seq, lo in enumerate(range(0, len(recs), batch_records)):
                hi = min(lo + batch_records, len(recs))
                items.append((batch_key(job_id, r + 1, seq),
                              build_frame(recs[lo:hi], pays[lo:hi], strings, job_id=job_id,
                                          ring_uid=r + 1, seq=seq, rank=r)))
                if len(items) >= 16:
                    st.put_batches(items)
                    items = []
            if r == 0:   # the workflow record
                wf = np.zeros(1, RECORD_DTYPE)
                wf["workflow_id"], wf["flags"] = 0x174FD72B81B5E6B1, 1 | FLAG_WORKFLOW
                wf["start_ns"] = wf["end_ns"] = recs["start_ns"][0]
                doc = msgpack.packb({"name": "bench", "job": "bench-job", "user": "bench",
                                     "campaign_id": "bench"}, use_bin_type=True)
                items.append((batch_key(job_id, r + 1, 1 << 30),
                              build_frame(wf, [doc], strings, job_id=job_id, ring_uid=r + 1,
                                          seq=1 << 30, rank=r)))
            st.put_batches(items)
    finally:
        st.close()
    return time.perf_counter() - t
