"""The reading under ``Flowcept.db`` (flowcept.compat.dbapi): task rows
and merged workflow records from stores, through the read path, and the
query operations on documents (projection, sort, aggregation).

``read_stores(stores, cond)`` reads open stores; ``_raw(paths, cond)`` reads
every store under directories (default: the configured ``run_dir``, the run
directories this process's ``Flowcept`` objects used, and the running
session's store, drained first); ``cond`` (``_columns_part`` of a filter):
only the matching tasks, with their parents and children.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    """Store directories (and archives, when named) to read."""
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
        if os.path.isfile(root) and _is_archive(root):
            found = [root]
        else:
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


def _is_archive(path: str) -> bool:
    from flowcept.access.sources import is_archive
    return is_archive(path)


class _FramesStore:
    """Frames in memory (the live session's) as a read-only store for the read path."""

    def __init__(self, frames):
        from flowcept.query.frames import frame_key
        self.frames = {frame_key(f): f for f in frames}

    def summaries(self):
        from flowcept.native.batch import Batch
        from flowcept.store.summary import summarize_columns
        for key, f in self.frames.items():
            yield key, summarize_columns(Batch(f, check=False))

    def scan(self, keys=None, zero_copy=False):
        for key in (self.frames if keys is None else keys):
            f = self.frames.get(bytes(key))
            if f is not None:
                yield bytes(key), f

    def close(self):
        pass


def _raw(paths: Sequence[str] = (), cond: Optional[dict] = None):
    """(task rows, workflows by int id): task rows are (doc, body) in start
    order (then task id), read through the one read path
    (flowcept.query.engine): doc is the reader's document and body the
    decoded payload (for the Flowcept fields the reader leaves out).  A batch
    in several stores is read once.  ``cond``: only the tasks matching it on
    the columns, with their parents and children (the Flowcept shape of a
    task looks at them), not every task."""
    from flowcept.query.engine import StoreTable
    from flowcept.store import open_store_at
    live_path, live_frames, live_wfs = _live_frames() if not paths else (None, [], {})
    workflows: Dict[int, dict] = {}
    rows: List[Tuple[dict, Any]] = []
    stores = []
    archives = []
    try:
        for sp in _store_paths(paths):
            if live_path and (sp == live_path or sp.startswith(live_path + os.sep)
                              or live_path.startswith(sp + os.sep)):
                continue   # the open store is read through its own handle
            if os.path.isfile(sp):
                import flowcept.archive
                a = flowcept.archive.open(sp)
                archives.append(a)
                for wf, doc in a.workflows_by_id().items():
                    workflows.setdefault(wf, {}).update(doc)
                continue
            st = open_store_at(sp)
            stores.append(st)
            for wf, doc in st.workflows().items():
                workflows.setdefault(wf, {}).update(doc)
        if live_frames:
            stores.append(_FramesStore(live_frames))
        tables = ([StoreTable(stores)] if stores else []) + [a.table() for a in archives]
        for table in tables:
            rows.extend(_table_rows(table, cond))
    finally:
        for st in stores:
            st.close()
        for a in archives:
            a.close()
    for wf, doc in live_wfs.items():
        workflows.setdefault(wf, {}).update(doc)
    if len(tables) > 1:
        rows.sort(key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
    return rows, workflows


def _table_rows(table, cond: Optional[dict]) -> List[Tuple[dict, Any]]:
    from flowcept.query.documents import DEFAULT_SORT, hex_ids
    from flowcept.query.engine import matching, stream
    if cond:
        ids, parents = [], []
        for _ref, block, rows in matching(table, cond):
            wf = block.cols["workflow_id"][rows]
            ids.extend(hex_ids(wf, block.cols["task_id"][rows]).tolist())
            pid = block.cols["parent_id"][rows]
            parents.extend(hex_ids(wf[pid != 0], pid[pid != 0]).tolist())
        if not ids:
            return []
        cond = {"$or": [cond, {"task_id": {"$in": sorted(set(parents))}},
                        {"parent_task_id": {"$in": ids}}]}
    out: List[Tuple[dict, Any]] = []
    for part in stream(table, cond, DEFAULT_SORT, bodies=True):
        out.extend(part)
    return out


# Fields whose value is the same in the reader's document and in Flowcept's
# shape of it: a query on them is answered on the columns first.
_SAME_FIELDS = frozenset(("activity_id", "rank", "thread_id", "hostname", "started_at", "ended_at",
                          "start_ns", "end_ns"))


def _columns_part(flt: Optional[dict]) -> Optional[dict]:
    """The part of a filter the columns can answer (ANDed terms on fields
    that Flowcept's shape leaves as they are), or None."""
    if not isinstance(flt, dict):
        return None
    terms = []
    for key, spec in flt.items():
        if key == "$and" and isinstance(spec, list):
            terms.extend(p for p in (_columns_part(c) for c in spec) if p)
        elif key in _SAME_FIELDS:
            terms.append({key: spec})
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else {"$and": terms}


def read_stores(stores, cond: Optional[dict] = None) -> Tuple[List[Tuple[dict, Any]],
                                                             Dict[int, dict]]:
    """(task rows in start order, workflows by int id) of open stores (or
    frames: ``frames_store``), through the one read path; a batch in several
    of them is read once; ``cond`` as in ``_raw``."""
    from flowcept.query.engine import StoreTable
    workflows: Dict[int, dict] = {}
    for st in stores:
        for wf, doc in (st.workflows() if hasattr(st, "workflows") else {}).items():
            workflows.setdefault(wf, {}).update(doc)
    return (_table_rows(StoreTable(list(stores)), cond) if stores else []), workflows


def frames_store(frames) -> "_FramesStore":
    """Batch frames in memory as a read-only store of the read path."""
    return _FramesStore(frames)


# -- query operations -------------------------------------------------------
def project(docs: List[dict], projection) -> List[dict]:
    """Mongo-style projection: a list of fields, or {field: 1|0}
    (flowcept.query.documents.project, document by document)."""
    if not projection:
        return docs
    from flowcept.query.documents import project as project_one
    return [project_one(d, projection) for d in docs]


def sort_docs(docs: List[dict], sort) -> List[dict]:
    """sort: [(field, ASCENDING|DESCENDING), ...] (or one field name), in the
    one order every way in sorts by (flowcept.query.documents.sort_docs)."""
    if not sort:
        return docs
    from flowcept.query.documents import sort_docs as sort_in_place
    return sort_in_place(list(docs), sort)


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
