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
