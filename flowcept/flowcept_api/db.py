"""The reading under ``Flowcept.db`` (flowcept.compat.dbapi): task rows
and merged workflow records from stores, through the read path, and the
query operations on documents (projection, sort, aggregation).

``read_stores(stores)`` reads open stores; ``_raw(paths)`` reads every
store under directories (default: the configured ``run_dir``, the run
directories this process's ``Flowcept`` objects used, and the running
session's store, drained first).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from flowcept.query import filters as F

ASCENDING = 1
DESCENDING = -1

# run directories used by Flowcept objects of this process (queries read them too)
known_run_dirs: List[str] = []


# -- reading ---------------------------------------------------------------
def _live_frames() -> Tuple[Optional[str], List[bytes], Dict[int, dict]]:
    """(store path, frames, workflows) of this process's open session, drained
    first; (None, [], {}) when there is none or its store is not local."""
    from flowcept.capture import session as runtime
    s = runtime.current()
    drainer = getattr(s, "drainer", None) if s is not None and not s.closed else None
    if drainer is None:
        return None, [], {}
    try:
        drainer.drain_once(max_batches=1 << 30)
        drainer.drain_spills()
    except Exception:   # what is still in the ring is read after the run
        pass
    store = getattr(getattr(drainer, "transport", None), "store", None)
    if store is None:
        # the store is written by another process (the leader process, a
        # keeper): what was drained is read from disk like any other run
        root = os.path.dirname(os.path.abspath(s.job.run_dir))
        if root not in known_run_dirs:
            known_run_dirs.append(root)
        return None, [], {}
    # the drainer's lock: no write transaction is open while we read
    with drainer._lock:
        frames = [bytes(f) for _k, f in store.scan()]
        wfs = store.workflows()
    return os.path.abspath(getattr(store, "path", "")), frames, wfs


def _store_paths(extra_paths: Sequence[str] = ()) -> List[str]:
    from flowcept.config import ConfigError, process_config
    from flowcept.query.tasks import find_stores
    roots = list(extra_paths)
    if not roots:
        try:
            roots.append(process_config().run_dir)
        except ConfigError:
            pass
        roots.extend(known_run_dirs)
    out, seen = [], set()
    for root in roots:
        if not root or not os.path.exists(root):
            continue
        try:
            found = find_stores(root)
        except FileNotFoundError:
            continue
        for p in found:
            ap = os.path.abspath(p)
            if ap not in seen:
                seen.add(ap)
                out.append(ap)
    return out


def _raw(paths: Sequence[str] = ()):
    """(task rows, workflows by int id): task rows are (doc, body) where doc
    is the reader's document (flowcept.query.tasks.task_dict) and body the
    decoded payload (for the Flowcept fields the reader leaves out)."""
    from flowcept.query.tasks import read_records
    from flowcept.store import open_store_at
    live_path, live_frames, live_wfs = _live_frames() if not paths else (None, [], {})
    workflows: Dict[int, dict] = {}
    rows: List[Tuple[dict, Any]] = []
    for sp in _store_paths(paths):
        if live_path and (sp == live_path or sp.startswith(live_path + os.sep)
                          or live_path.startswith(sp + os.sep)):
            continue   # the open store is read through its own handle
        rows.extend(_rows(read_records(sp)))
        with open_store_at(sp) as st:
            for wf, doc in st.workflows().items():
                workflows.setdefault(wf, {}).update(doc)
    if live_frames:
        rows.extend(_rows(_records_of_frames(live_frames)))
    for wf, doc in live_wfs.items():
        workflows.setdefault(wf, {}).update(doc)
    return rows, workflows


def _records_of_frames(frames):
    """What read_records gives for a store path, for frames in memory."""
    import numpy as np
    from flowcept.native.batch import Batch
    from flowcept.query import tasks as T
    from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX, RECORD_DTYPE
    named_payload = getattr(T, "named_payload", None)
    name_flag = getattr(__import__("flowcept.record.payload", fromlist=["x"]),
                        "FLAG_NAME_IN_PAYLOAD", 0)
    recs, acts, nodes, pays = [], [], [], []
    for frame in frames:
        b = Batch(frame, check=False)
        strings = list(b.strings) + [""]
        node = strings[0][len(NODE_PREFIX):] if strings[0].startswith(NODE_PREFIX) else ""
        r = b.records
        for i in np.flatnonzero((r["flags"] & FLAG_WORKFLOW) == 0).tolist():
            act = strings[min(int(r["activity_id"][i]), len(strings) - 1)]
            payload = b.payload_of(i)
            flags = int(r["flags"][i])
            if named_payload is not None and name_flag and flags & name_flag:
                act, payload = named_payload(payload, flags, act)
            recs.append(r[i])
            acts.append(act)
            nodes.append(node)
            pays.append(payload)
    records = np.array(recs, dtype=RECORD_DTYPE) if recs else np.zeros(0, RECORD_DTYPE)
    return T.Records(records, np.array(acts, dtype=object), np.array(nodes, dtype=object), pays)


def read_stores(stores) -> Tuple[List[Tuple[dict, Any]], Dict[int, dict]]:
    """(task rows in start order, workflows by int id) of open stores; a
    batch in several of them is read once."""
    frames, seen = [], set()
    workflows: Dict[int, dict] = {}
    for st in stores:
        for key, frame in st.scan():
            if bytes(key) not in seen:
                seen.add(bytes(key))
                frames.append(bytes(frame))
        for wf, doc in st.workflows().items():
            workflows.setdefault(wf, {}).update(doc)
    rows = list(_rows(_records_of_frames(frames)))
    rows.sort(key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
    return rows, workflows


def _rows(r) -> Iterator[Tuple[dict, Any]]:
    from flowcept.query.tasks import task_dict
    from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK
    from flowcept.record.payload import decode
    for i in range(len(r)):
        rec, payload = r.records[i], r.payloads[i]
        doc = task_dict(rec, r.activity[i], r.node[i], payload)
        body: Any = {}
        if payload and int(rec["flags"]) & FLAG_PAYLOAD_MSGPACK:
            try:
                body = decode(payload)
            except Exception:   # the reader's document already says what is wrong
                body = {}
        yield doc, body


# -- query operations -------------------------------------------------------
def _set_path(doc: dict, path: str, value) -> None:
    parts = path.split(".")
    cur = doc
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def project(docs: List[dict], projection) -> List[dict]:
    """Mongo-style projection: a list of fields, or {field: 1|0}."""
    if not projection:
        return docs
    if isinstance(projection, dict):
        include = [k for k, v in projection.items() if v]
        exclude = [k for k, v in projection.items() if not v]
    else:
        include, exclude = list(projection), []
    out = []
    for d in docs:
        if include:
            nd: dict = {}
            for f in include:
                v = F.get_path(d, f)
                if v is not F.MISSING:
                    _set_path(nd, f, v)
        else:
            nd = json.loads(json.dumps(d, default=str))
        for f in exclude:
            parts = f.split(".")
            cur = nd
            for p in parts[:-1]:
                cur = cur.get(p) if isinstance(cur, dict) else None
            if isinstance(cur, dict):
                cur.pop(parts[-1], None)
        out.append(nd)
    return out


def _sort_key(value):
    if value is F.MISSING or value is None:
        return (0, 0)
    if F.is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, str(value))


def sort_docs(docs: List[dict], sort) -> List[dict]:
    """sort: [(field, ASCENDING|DESCENDING), ...] (or one field name)."""
    if not sort:
        return docs
    if isinstance(sort, str):
        sort = [(sort, ASCENDING)]
    if isinstance(sort, tuple) and len(sort) == 2 and isinstance(sort[0], str):
        sort = [sort]
    for field, order in reversed(list(sort)):
        docs = sorted(docs, key=lambda d: _sort_key(F.get_path(d, field)), reverse=order == DESCENDING)
    return docs


_AGG = ("avg", "sum", "min", "max", "count")


def aggregate(docs: List[dict], aggregation, projection=None) -> List[dict]:
    """aggregation: [(op, field), ...] with op in avg/sum/min/max/count.
    Grouped by the projection's fields when given (else one group); each
    result has ``_id`` (the group's field values) and ``<op>_<field>`` with
    dots as underscores."""
    fields = list(projection or [])
    groups: Dict[str, Tuple[dict, List[dict]]] = {}
    for d in docs:
        key = {f: (None if (v := F.get_path(d, f)) is F.MISSING else v) for f in fields}
        k = json.dumps(key, sort_keys=True, default=str)
        groups.setdefault(k, (key, []))[1].append(d)
    out = []
    for key, members in groups.values():
        row: Dict[str, Any] = {"_id": key or None}
        row.update(key)
        for op, field in aggregation:
            op = op.lower().lstrip("$")
            if op not in _AGG:
                raise ValueError(f"unknown aggregation {op!r}; use one of {', '.join(_AGG)}")
            vals = [v for m in members if F.is_number(v := F.get_path(m, field))]
            name = f"{op}_{field.replace('.', '_')}"
            if op == "count":
                row[name] = sum(1 for m in members if F.get_path(m, field) is not F.MISSING)
            elif not vals:
                row[name] = None
            elif op == "avg":
                row[name] = sum(vals) / len(vals)
            elif op == "sum":
                row[name] = sum(vals)
            elif op == "min":
                row[name] = min(vals)
            else:
                row[name] = max(vals)
        out.append(row)
    return out


def _jsonable(doc):
    """remove_json_unserializables: bytes and other values JSON cannot hold
    become their string forms."""
    return json.loads(json.dumps(doc, default=lambda o: o.decode("latin-1")
                                 if isinstance(o, (bytes, bytearray)) else str(o)))
