"""Querying stored task records, Flowcept-style, without decoding everything
(the read path: ``flowcept.query.engine`` over the stores' batches).

::

    from flowcept.query.search import query
    query("./flowcept-runs/12345", filter={"activity_id": "diffuse", "rank": {"$in": [0, 1]}})
    query(path, activity="residual", start=t0, end=t1, limit=10)

Three levels, each cheaper than the next:
  1. the per-batch summaries index of every LMDB shard (record count, time
     range, task-id range, rank range, workflow ids, activity names, error
     count, node) decides which batches *may* hold a match; the others are
     never read;
  2. in a batch that is read, the filter runs on the record columns with
     numpy (ranks, times, ids, activity, status, host: exact);
  3. payloads are decoded only for the rows still in question when the
     filter names a payload field, and for the rows returned
     (flowcept.query.documents).

Filters are Mongo-style dicts as in Flowcept's ``Flowcept.db.query(filter=...)``:
``$eq $ne $gt $gte $lt $lte $in $nin $exists $regex`` on a field, and
``$and $or $nor`` to combine; a bare value means ``$eq``; on a list field
(``tags``) ``$eq``/``$in`` match any element; dotted paths reach into
``used``/``generated`` (``{"used.x": 1}``).  Fields: task_id, workflow_id,
activity_id, rank, status, started_at, ended_at (seconds), start_ns,
end_ns, hostname, parent_task_id, thread_id, tags, used.*, generated.*.

``stats`` (a dict you pass, also kept in ``last_stats``) receives the counts:
batches_total, batches_read, records_scanned, records_decoded, returned,
payload_errors (payloads flagged msgpack that do not decode: those tasks
keep their raw bytes in ``payload``; see flowcept.query.tasks).
"""
from __future__ import annotations

from typing import Dict, List, Optional

from flowcept.query.filters import matches  # noqa: F401 (part of this module's API)
from flowcept.query.prune import batch_may_match  # noqa: F401 (part of this module's API)

last_stats: Dict[str, int] = {}


# -- building the condition ------------------------------------------------
def _as_list(v):
    return list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]


def build_condition(filter=None, workflow=None, activity=None, rank=None, start=None, end=None,
                    task_id=None) -> dict:
    parts = []
    if filter:
        if not isinstance(filter, dict):
            raise ValueError(f"filter must be a dict (Mongo-style), not {type(filter).__name__}")
        parts.append(filter)
    if workflow is not None:
        wfs = [f"{w:016x}" if isinstance(w, int) else str(w) for w in _as_list(workflow)]
        parts.append({"workflow_id": {"$in": wfs}})
    if activity is not None:
        parts.append({"activity_id": {"$in": _as_list(activity)}})
    if rank is not None:
        parts.append({"rank": {"$in": [int(r) for r in _as_list(rank)]}})
    if start is not None:
        parts.append({"started_at": {"$gte": float(start)}})
    if end is not None:
        parts.append({"ended_at": {"$lte": float(end)}})
    if task_id is not None:
        parts.append({"task_id": {"$in": _as_list(task_id)}})
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


# -- the query ---------------------------------------------------------------
def query(path: str, filter: Optional[dict] = None, workflow=None, activity=None, rank=None,
          start: Optional[float] = None, end: Optional[float] = None, task_id=None,
          limit: Optional[int] = None, stats: Optional[dict] = None) -> List[dict]:
    """Task records under path (run dir, job dir or store dir) matching the
    filter and the keyword conditions (all ANDed), as Flowcept-style dicts in
    storage order (batch key, then record order).  ``start``/``end`` are
    seconds since the epoch (``started_at >= start``, ``ended_at <= end``).
    A batch found in several stores under path is read once."""
    from flowcept.query.documents import documents
    from flowcept.query.engine import block_mask
    from flowcept.query.tasks import store_table
    cond = build_condition(filter, workflow, activity, rank, start, end, task_id)
    st = {"batches_total": 0, "batches_read": 0, "records_scanned": 0, "records_decoded": 0,
          "returned": 0, "payload_errors": 0}
    out: List[dict] = []
    table = store_table(path)
    try:
        refs = table.refs(None)
        st["batches_total"] = len(refs)
        refs = [r for r in refs if not cond or batch_may_match(r.summary, cond)]
        for _ref, block in table.blocks(refs):
            st["batches_read"] += 1
            st["records_scanned"] += block.n
            rows = block_mask(block, cond)
            if limit is not None:
                rows = rows[:max(0, limit - len(out))]
            st["records_decoded"] += len(rows)
            out.extend(documents(block, rows, stats=st))
            if limit is not None and len(out) >= limit:
                break
    finally:
        table.close()
    st["returned"] = len(out)
    last_stats.clear()
    last_stats.update(st)
    if stats is not None:
        stats.update(st)
    return out
