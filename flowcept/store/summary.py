"""What every store derives from a batch when it stores it: the per-batch
summary (the index that lets queries skip whole batches) and the workflow
documents it carries.  Shared by all store backends so that their
summaries, and so their query pruning, agree."""
from __future__ import annotations

import numpy as np

from flowcept.native.batch import Batch
from flowcept.record.layout import FLAG_WORKFLOW, STATUS_ERROR, node_of
from flowcept.record.payload import (ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD, PayloadError,
                                     decode_map, split_name)


def prepare() -> None:
    """Loads what ``summarize`` would load on its first call: numpy's
    ``np.unique`` imports ``numpy.ma`` lazily, 40+ ms during which a
    leader's first batch waits and a tight loop's ring fills.  A store
    opened for writing calls it."""
    import numpy.ma  # noqa: F401


def summarize(batch: Batch) -> dict:
    """The per-batch index entry.  Works on columns (no structured copies):
    this runs once per batch on the ingest path."""
    recs = batch.records
    flags = recs["flags"]
    is_wf = (flags & FLAG_WORKFLOW) != 0
    n_wf = int(np.count_nonzero(is_wf))

    def col(name):
        c = recs[name]
        return c[~is_wf] if n_wf else c

    n = len(recs) - n_wf
    summary = {"n": n, "nw": n_wf}
    if n:
        names = batch.strings
        start, end, tid, rank = col("start_ns"), col("end_ns"), col("task_id"), col("rank")
        act_ids = col("activity_id")
        overflow = act_ids == ACTIVITY_OVERFLOW
        act = ([names[a] if a < len(names) else ""
                for a in np.unique(act_ids[~overflow]).tolist()] if not overflow.all() else [])
        if overflow.any():   # names carried in the payload (the ring's table was full)
            rows = np.flatnonzero((recs["activity_id"] == ACTIVITY_OVERFLOW) & ~is_wf)
            for i in rows.tolist():
                name, _ = split_name(batch.payload_of(i), int(recs[i]["flags"]))
                if name is None:
                    raise PayloadError(f"record {i}: activity id {ACTIVITY_OVERFLOW:#x} "
                                       "without a well-formed name prefix")
                if name not in act:
                    act.append(name)
        wf = col("workflow_id")
        summary.update(
            t0=int(start.min()), t1=int(end.max()), id0=int(tid.min()), id1=int(tid.max()),
            r0=int(rank.min()), r1=int(rank.max()),
            wf=[int(wf[0])] if (wf == wf[0]).all() else np.unique(wf).tolist(),
            act=act,
            err=int(np.count_nonzero(col("status") == STATUS_ERROR)),
            # query index: max start, min end, node of the batch
            s1=int(start.max()), e0=int(end.min()))
        node = node_of(names)
        if node:
            summary["host"] = node
    return summary


def workflow_docs(batch: Batch):
    """(workflow_id, doc) for each workflow record of the batch; raises
    PayloadError (a ValueError) for one that is not a msgpack map."""
    for i in np.flatnonzero(batch.records["flags"] & FLAG_WORKFLOW).tolist():
        data = batch.payload_of(i)
        flags = int(batch.records[i]["flags"])
        if flags & FLAG_NAME_IN_PAYLOAD:
            _, data = split_name(data, flags)
        try:
            doc = decode_map(data)
        except PayloadError as e:
            raise PayloadError(f"workflow record {i}: {e}") from None
        yield int(batch.records[i]["workflow_id"]), doc
