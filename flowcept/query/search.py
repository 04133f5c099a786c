"""Querying stored task records, Flowcept-style, without decoding everything.

::

    from flowcept.query.search import query
    query("./flowcept-runs/12345", filter={"activity_id": "diffuse", "rank": {"$in": [0, 1]}})
    query(path, activity="residual", start=t0, end=t1, limit=10)

Three levels, each cheaper than the next:
  1. the per-batch summaries index of every LMDB shard (record count, time
     range, task-id range, rank range, workflow ids, activity names, error
     count, node) decides which batches *may* hold a match; the others are
     never read;
  2. in a batch that is read, the fixed-size record headers are filtered
     with numpy (ranks, times, ids, activity, status);
  3. only the survivors are decoded into Flowcept-style dicts
     (flowcept.query.tasks.task_dict) and matched exactly against the filter.

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

from typing import Any, Dict, List, Optional

import numpy as np

from flowcept.query.filters import Columns, field_ops, mask, matches

# header fields the prefilter answers exactly (the rest: per document)
_HEADER_FIELDS = frozenset(("rank", "started_at", "ended_at", "start_ns", "end_ns", "status",
                            "activity_id", "workflow_id", "task_id"))
from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX, STATUS_NAMES, parse_task_id

last_stats: Dict[str, int] = {}

_CMP = ("$gt", "$gte", "$lt", "$lte")

_STATUS_CODES = {v: k for k, v in STATUS_NAMES.items()}


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


# -- level 1: can a batch match, from its summary ----------------------------
def _range_may(lo, hi, op, arg) -> bool:
    """Whether some value in [lo, hi] satisfies `op arg` (numbers)."""
    try:
        if op == "$eq":
            return lo <= arg <= hi
        if op == "$in":
            return any(_range_may(lo, hi, "$eq", a) for a in _as_list(arg))
        if op == "$gt":
            return hi > arg
        if op == "$gte":
            return hi >= arg
        if op == "$lt":
            return lo < arg
        if op == "$lte":
            return lo <= arg
    except TypeError:
        return False   # a number field compared with a non-number never matches
    return True


def _set_may(values, op, arg) -> bool:
    if op == "$eq":
        return arg in values
    if op == "$in":
        return any(a in values for a in _as_list(arg))
    if op == "$ne":
        return not (len(values) == 1 and arg in values)
    if op == "$nin":
        return not set(values) <= set(_as_list(arg))
    return True


def _parse_tid(text):
    try:
        return parse_task_id(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _field_may(summary: dict, field: str, op: str, arg) -> bool:
    s = summary
    if field == "rank":
        return _range_may(s["r0"], s["r1"], op, arg)
    if field in ("started_at", "start_ns"):
        scale = 1e9 if field == "started_at" else 1
        return _range_may(s["t0"] / scale if scale != 1 else s["t0"],
                          s.get("s1", s["t1"]) / scale if scale != 1 else s.get("s1", s["t1"]), op, arg)
    if field in ("ended_at", "end_ns"):
        scale = 1e9 if field == "ended_at" else 1
        lo = s.get("e0", s["t0"])
        return _range_may(lo / scale if scale != 1 else lo,
                          s["t1"] / scale if scale != 1 else s["t1"], op, arg)
    if field == "workflow_id":
        return _set_may({f"{w:016x}" for w in s["wf"]}, op, arg)
    if field == "activity_id":
        return _set_may(set(s["act"]), op, arg)
    if field == "hostname" and "host" in s:
        return _set_may({s["host"]}, op, arg)
    if field == "status":
        if op == "$eq":
            if arg == "ERROR":
                return s.get("err", 1) > 0
            if arg in ("FINISHED", "RUNNING"):
                return s.get("err", 0) < s["n"]
            return False
        if op == "$in":
            return any(_field_may(s, field, "$eq", a) for a in _as_list(arg))
        return True
    if field == "task_id":
        if op == "$eq":
            p = _parse_tid(arg)
            if p is None:
                return False
            wf, tid = p
            return wf in s["wf"] and s["id0"] <= tid <= s["id1"]
        if op == "$in":
            return any(_field_may(s, field, "$eq", a) for a in _as_list(arg))
        return True
    return True


def batch_may_match(summary: dict, cond: dict) -> bool:
    """False only when no task of the batch can match (conservative)."""
    if summary.get("n", 0) == 0:
        return False
    for key, spec in cond.items():
        if key == "$and":
            if not all(batch_may_match(summary, c) for c in spec):
                return False
        elif key == "$or":
            if not any(batch_may_match(summary, c) for c in spec):
                return False
        elif key.startswith("$"):
            continue
        else:
            for op, arg in field_ops(spec).items():
                if not _field_may(summary, key, op, arg):
                    return False
    return True


# -- level 2: numpy prefilter on record headers -------------------------------
class _Cols(Columns):
    """A batch's header columns for the filter engine (no documents: a
    prefilter, exact for the fields it has)."""

    def field_mask(self, field, op, arg, rows):
        if field not in _HEADER_FIELDS:
            return None
        m = _field_mask(self, None, field, op, arg, len(self.recs))
        return None if m is None else m[rows]

    def __init__(self, recs, names_of_rows):
        self.recs = recs
        self._names = names_of_rows
        self._cache = {}

    def get(self, field):
        if field in self._cache:
            return self._cache[field]
        r = self.recs
        col = None
        if field == "rank":
            col = r["rank"].astype(np.int64)
        elif field == "started_at":
            col = r["start_ns"].astype(np.int64) / 1e9
        elif field == "ended_at":
            col = r["end_ns"].astype(np.int64) / 1e9
        elif field == "start_ns":
            col = r["start_ns"].astype(np.int64)
        elif field == "end_ns":
            col = r["end_ns"].astype(np.int64)
        elif field == "activity_id":
            col = self._names()
        elif field == "status":
            col = r["status"].astype(np.int64)
        self._cache[field] = col
        return col


def _num_mask(col, op, arg):
    n = len(col)
    try:
        if op == "$eq":
            return col == arg if isinstance(arg, (int, float)) and not isinstance(arg, bool) else np.zeros(n, bool)
        if op == "$ne":
            return col != arg if isinstance(arg, (int, float)) and not isinstance(arg, bool) else np.ones(n, bool)
        if op in _CMP:
            if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                return np.zeros(n, bool)
            return {"$gt": col > arg, "$gte": col >= arg, "$lt": col < arg, "$lte": col <= arg}[op]
        if op in ("$in", "$nin"):
            vals = [a for a in _as_list(arg) if isinstance(a, (int, float)) and not isinstance(a, bool)]
            m = np.isin(col, vals) if vals else np.zeros(n, bool)
            return m if op == "$in" else ~m
    except TypeError:
        pass
    return None   # no exact answer: the documents decide


def _field_mask(cols: _Cols, batch_wf, field, op, arg, n):
    if field in ("rank", "started_at", "ended_at", "start_ns", "end_ns"):
        return _num_mask(cols.get(field), op, arg)
    if field == "status":
        conv = (lambda a: _STATUS_CODES.get(a, -1))
        if op in ("$eq", "$ne"):
            return _num_mask(cols.get(field), op, conv(arg))
        if op in ("$in", "$nin"):
            return _num_mask(cols.get(field), op, [conv(a) for a in _as_list(arg)])
        return None   # no exact answer: the documents decide
    if field == "activity_id":
        col = cols.get(field)
        if op == "$eq":
            return col == arg
        if op == "$ne":
            return col != arg
        if op in ("$in", "$nin"):
            m = np.isin(col, np.array([a for a in _as_list(arg) if isinstance(a, str)], dtype=object))
            return m if op == "$in" else ~m
        return None   # no exact answer: the documents decide
    if field == "workflow_id":
        wf = cols.recs["workflow_id"]
        def ints(vals):
            out = []
            for v in vals:
                try:
                    out.append(int(v, 16) if isinstance(v, str) and len(v) == 16 else -1)
                except ValueError:
                    out.append(-1)
            return [v for v in out if v >= 0]
        if op in ("$eq", "$in"):
            return np.isin(wf, np.array(ints(_as_list(arg)), dtype=np.uint64))
        if op in ("$ne", "$nin"):
            return ~np.isin(wf, np.array(ints(_as_list(arg)), dtype=np.uint64))
        return None   # no exact answer: the documents decide
    if field == "task_id" and op in ("$eq", "$in"):
        m = np.zeros(n, bool)
        for a in _as_list(arg):
            p = _parse_tid(a)
            if p is not None:
                m |= (cols.recs["workflow_id"] == np.uint64(p[0])) & (cols.recs["task_id"] == np.uint64(p[1]))
        return m
    return None   # no exact answer: the documents decide


def record_mask(cols: _Cols, cond: dict, n: int):
    """Records that may match (exact for header fields, True for the rest):
    the filter engine over the batch's header columns; the documents of the
    rows it keeps are then matched exactly."""
    return mask(cond, cols, np.arange(n))[0]


# -- the query ---------------------------------------------------------------
def query(path: str, filter: Optional[dict] = None, workflow=None, activity=None, rank=None,
          start: Optional[float] = None, end: Optional[float] = None, task_id=None,
          limit: Optional[int] = None, stats: Optional[dict] = None) -> List[dict]:
    """Task records under path (run dir, job dir or store dir) matching the
    filter and the keyword conditions (all ANDed), as Flowcept-style dicts in
    storage order (batch key, then record order).  ``start``/``end`` are
    seconds since the epoch (``started_at >= start``, ``ended_at <= end``)."""
    from flowcept.native.batch import Batch
    from flowcept.query.tasks import find_stores, named_payload, task_dict
    from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD
    from flowcept.store import open_store_at
    cond = build_condition(filter, workflow, activity, rank, start, end, task_id)
    st = {"batches_total": 0, "batches_read": 0, "records_scanned": 0, "records_decoded": 0,
          "returned": 0, "payload_errors": 0}
    out: List[dict] = []
    done = False
    for sp in find_stores(path):
        if done:
            break
        with open_store_at(sp) as store:
            keys = []
            for key, summary in store.summaries():
                st["batches_total"] += 1
                if batch_may_match(summary, cond):
                    keys.append(bytes(key))
            for _key, frame in store.scan(keys=keys):
                st["batches_read"] += 1
                b = Batch(frame, check=False)
                recs = b.records
                tasks = np.flatnonzero((recs["flags"] & FLAG_WORKFLOW) == 0)
                st["records_scanned"] += len(tasks)
                r = recs[tasks]
                strings = b.strings
                table = np.array(strings + [""], dtype=object)

                cache = {}

                def names(r=r, table=table, b=b, tasks=tasks, cache=cache):
                    if "names" not in cache:
                        out = table[np.minimum(r["activity_id"], len(table) - 1)]
                        named = np.flatnonzero(r["flags"] & FLAG_NAME_IN_PAYLOAD)
                        for j in named.tolist():   # names carried in the payload
                            out[j], _ = named_payload(b.payload_of(int(tasks[j])),
                                                      int(r["flags"][j]), out[j])
                        cache["names"] = out
                    return cache["names"]

                mask = record_mask(_Cols(r, names), cond, len(r)) if cond else np.ones(len(r), bool)
                idx = np.flatnonzero(mask)
                if not len(idx):
                    continue
                node = strings[0][len(NODE_PREFIX):] if strings and strings[0].startswith(NODE_PREFIX) else ""
                acts = names()
                for i in idx.tolist():
                    st["records_decoded"] += 1
                    payload = b.payload_of(int(tasks[i]))
                    if r["flags"][i] & FLAG_NAME_IN_PAYLOAD:
                        _, payload = named_payload(payload, int(r["flags"][i]), acts[i])
                    doc = task_dict(r[i], acts[i], node, payload, stats=st)
                    if not cond or matches(doc, cond):
                        out.append(doc)
                        if limit is not None and len(out) >= limit:
                            done = True
                            break
                if done:
                    break
    st["returned"] = len(out)
    last_stats.clear()
    last_stats.update(st)
    if stats is not None:
        stats.update(st)
    return out
