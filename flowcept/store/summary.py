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


MAX_WORKFLOWS = 64   # distinct workflow ids the C summary lists (more: the numpy one)


def summarize(batch: Batch) -> dict:
    """The per-batch index entry.  Runs once per batch on the ingest path:
    one C pass over the records (fc_batch_summarize), or the numpy one
    (``summarize_columns``) for what the C pass leaves to it."""
    from flowcept.native import ffi, lib
    out = ffi.new("fc_batch_summary *")
    acts = ffi.new("uint32_t[]", max(1, int(batch.header["string_count"])))
    wfs = ffi.new("uint64_t[]", MAX_WORKFLOWS)
    frame = ffi.from_buffer(batch.frame)
    if lib.fc_batch_summarize(frame, len(batch.frame), out, acts, wfs, MAX_WORKFLOWS) != 0:
        return summarize_columns(batch)
    summary = {"n": out.tasks, "nw": out.workflows}
    if out.tasks:
        names = batch.strings
        act = [names[a] for a in ffi.unpack(acts, out.n_acts)]
        if out.overflow:
            act = _overflow_names(batch, act)
        summary.update(t0=out.t0, t1=out.t1, id0=out.id0, id1=out.id1, r0=out.r0, r1=out.r1,
                       wf=ffi.unpack(wfs, out.n_wfs), act=act, err=out.errors,
                       s1=out.s1, e0=out.e0)
        node = node_of(names)
        if node:
            summary["host"] = node
    return summary


def _overflow_names(batch: Batch, act: list) -> list:
    """``act`` and then the names carried in payloads (the ring's table was
    full), in record order."""
    recs = batch.records
    rows = np.flatnonzero((recs["activity_id"] == ACTIVITY_OVERFLOW) &
                          ((recs["flags"] & FLAG_WORKFLOW) == 0))
    for i in rows.tolist():
        name, _ = split_name(batch.payload_of(i), int(recs[i]["flags"]))
        if name is None:
            raise PayloadError(f"record {i}: activity id {ACTIVITY_OVERFLOW:#x} "
                               "without a well-formed name prefix")
        if name not in act:
            act.append(name)
    return act


def summarize_columns(batch: Batch) -> dict:
    """``summarize`` with numpy on the record columns (the reference, and the
    way for batches with unknown activity ids or many workflows)."""
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
            act = _overflow_names(batch, act)
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
