"""Synthetic but real batch frames for keeper/query tests and benchmarks."""
from __future__ import annotations

import random

import msgpack
import numpy as np

from flowcept.native.batch import build_frame
from flowcept.record.layout import RECORD_DTYPE

ACTIVITIES = ["init", "step", "exchange", "diffuse", "residual", "io"]


def make_frame(seq: int, n: int = 100, *, job_id: int = 7, ring_uid: int = 1, rank: int = 0,
               workflow_id: int = 0xABC, t0: int = 1_700_000_000_000_000_000, node: str = "n0",
               payloads: bool = True, rng=None, origin: int = 0):
    """One frame of n task records; returns (frame, records array, payload dicts)."""
    rng = rng or random.Random(seq * 7919 + ring_uid)
    strings = [f"host:{node}"] + ACTIVITIES
    recs = np.zeros(n, RECORD_DTYPE)
    docs = []
    pays = []
    for i in range(n):
        tid = (origin << 40) | (seq * 1_000_000 + i + 1)
        start = t0 + seq * 10_000_000 + i * 1000 + rng.randrange(500)
        recs[i]["task_id"] = tid
        recs[i]["parent_id"] = 0 if i % 5 == 0 else (origin << 40) | (seq * 1_000_000 + (i - i % 5) + 1)
        recs[i]["workflow_id"] = workflow_id
        recs[i]["start_ns"] = start
        recs[i]["end_ns"] = start + rng.randrange(1, 5000)
        recs[i]["rank"] = rank
        recs[i]["thread_id"] = i % 2
        recs[i]["activity_id"] = 1 + (i + seq) % len(ACTIVITIES)
        recs[i]["status"] = 1 if rng.random() < 0.05 else 0
        recs[i]["flags"] = 1
        doc = {"used": {"i": i, "seq": seq}, "generated": {"v": float(i) / 3}}
        if i % 3 == 0:
            doc["tags"] = ["even" if i % 2 == 0 else "odd", f"t{i % 4}"]
        docs.append(doc)
        pays.append(msgpack.packb(doc, use_bin_type=True) if payloads else b"")
    frame = build_frame(recs, pays, strings, job_id=job_id, ring_uid=ring_uid, seq=seq, rank=rank)
    return frame, recs, docs


def frame_key(frame: bytes) -> bytes:
    from flowcept.native.batch import Batch
    return Batch(frame).key


JOB_ACTIVITIES = ["timestep", "exchange_halos", "diffuse", "residual"]
JOB_WORKFLOW = 0x5EED0F10A7C0FFEE


def job_records(n: int, ranks: int = 16, error_rate: float = 0.01, seed: int = 1,
                t0_ns: int = 1_795_838_200_000_000_000):
    """n task records of an MPI-like job, vectorised: per rank, steps of a
    ``timestep`` parent and three children; ``error_rate`` of them ERROR;
    msgpack payloads with used/generated values (and tags on some).
    Returns [(records, payloads)] per rank."""
    import numpy as np
    rng = np.random.default_rng(seed)
    per_rank = [n // ranks + (1 if r < n % ranks else 0) for r in range(ranks)]
    out = []
    for r, m in enumerate(per_rank):
        recs = np.zeros(m, RECORD_DTYPE)
        i = np.arange(m)
        step, pos = i // 4, i % 4
        dur = rng.lognormal(mean=np.log([2e5, 4e4, 9e4, 3e4])[pos], sigma=0.4).astype(np.int64)
        base = t0_ns + step * 400_000 + r * 1_000
        start = base + np.array([0, 10_000, 60_000, 160_000])[pos]
        end = start + dur
        end[pos == 0] = np.maximum(end[pos == 0], start[pos == 0] + 300_000)
        origin = r << 40
        recs["task_id"] = origin + i + 1
        recs["parent_id"] = np.where(pos == 0, 0, origin + step * 4 + 1)
        recs["workflow_id"] = JOB_WORKFLOW
        recs["start_ns"], recs["end_ns"] = start, end
        recs["rank"] = r
        recs["thread_id"] = 0
        recs["activity_id"] = 1 + pos
        recs["status"] = (rng.random(m) < error_rate).astype(np.uint16)
        recs["flags"] = 1
        delta = rng.random(m).tolist()
        status = recs["status"].tolist()
        pays = []
        for k, (s, p, d, e) in enumerate(zip(step.tolist(), pos.tolist(), delta, status)):
            doc = {"used": {"step": s, "alpha": 0.1, "rank": r}, "generated": {"delta": d}}
            if p == 3:
                doc["tags"] = ["check", f"r{r % 4}"]
            if e:
                doc["error"] = {"type": "builtins.ValueError", "message": f"diverged at step {s}"}
            pays.append(msgpack.packb(doc, use_bin_type=True))
        out.append((recs, pays))
    return out


def build_job_store(path: str, n: int, ranks: int = 16, error_rate: float = 0.01,
                    batch_records: int = 16384, node: str = "node0", job_id: int = 77, seed: int = 1):
    """Writes a job of n tasks into an LMDB store at path through the real
    write path (frames built and validated like a leader's, LmdbStore.put_batches),
    with its workflow record; returns the store path."""
    import numpy as np
    from flowcept.native.batch import batch_key
    from flowcept.record.layout import FLAG_WORKFLOW
    from flowcept.store.lmdb import LmdbStore
    strings = ["host:" + node] + JOB_ACTIVITIES
    st = LmdbStore(path)
    try:
        for r, (recs, pays) in enumerate(job_records(n, ranks, error_rate, seed)):
            items = []
            for seq, lo in enumerate(range(0, len(recs), batch_records)):
                hi = min(lo + batch_records, len(recs))
                items.append((batch_key(job_id, r + 1, seq),
                              build_frame(recs[lo:hi], pays[lo:hi], strings, job_id=job_id,
                                          ring_uid=r + 1, seq=seq, rank=r)))
            if r == 0:
                wf = np.zeros(1, RECORD_DTYPE)
                wf["workflow_id"], wf["flags"] = JOB_WORKFLOW, 1 | FLAG_WORKFLOW
                wf["start_ns"] = wf["end_ns"] = recs["start_ns"][0]
                doc = msgpack.packb({"name": "million", "job": "million-job", "user": "tester",
                                     "campaign_id": "c1"}, use_bin_type=True)
                items.append((batch_key(job_id, r + 1, 1 << 30),
                              build_frame(wf, [doc], strings, job_id=job_id, ring_uid=r + 1,
                                          seq=1 << 30, rank=r)))
            st.put_batches(items)
    finally:
        st.close()
    return path
