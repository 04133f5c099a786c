"""A run as a Chrome/Perfetto trace (``flowcept export --format perfetto job.h5``).

Writes the Trace Event Format (JSON; opens in https://ui.perfetto.dev and
chrome://tracing): one process track per (host, rank), one thread track per
thread id in it, one complete ("X") event per task, named by its activity,
with task id, parent, status and workflow in ``args``, and what the task
used and generated (bounded: ARG_KEYS names, each value at most ARG_CHARS of
JSON, so clicking a slice shows its inputs).  Failed tasks carry
category ``ERROR``.  Times are microseconds since the first task started,
so the trace opens at zero; the absolute start is in ``metadata``.

The trace is streamed: one pass over the columns finds the tracks and the
first start, a second writes the events in start order block by block (the
read path's ``stream``), so memory does not grow with the run.  A progress
bar shows on a terminal; a budget (seconds) stops a run that takes longer.
"""
from __future__ import annotations

import gzip
import os
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from flowcept.query import engine
from flowcept.query.documents import DEFAULT_SORT, dumps
from flowcept.query.limits import UNBOUNDED, Budget

_FIELDS = ["task_id", "workflow_id", "status", "parent_task_id", "tags", "activity_id", "start_ns",
           "end_ns", "rank", "thread_id", "hostname", "used", "generated"]
ARG_KEYS = 16      # names of used/generated shown per slice
ARG_CHARS = 200    # JSON characters per value shown


def bounded(value):
    """A used/generated value as a slice argument: small values as they are,
    larger ones cut to ARG_CHARS characters of JSON (with "…")."""
    if isinstance(value, dict):
        out = {}
        for k in list(value)[:ARG_KEYS]:
            out[str(k)] = bounded(value[k])
        if len(value) > ARG_KEYS:
            out["…"] = f"{len(value) - ARG_KEYS} more"
        return out
    text = dumps(value).decode("utf-8", "replace")
    if len(text) <= ARG_CHARS:
        return value
    return text[:ARG_CHARS] + "…"


def _tracks(table: engine.Table, budget: Budget):
    """(first start, task count, {(host, rank): pid}, {(pid, thread): tid}) from the columns."""
    t0, n = None, 0
    procs, threads = set(), set()
    for _ref, block, rows in engine.matching(table, None, budget):
        c = block.cols
        n += len(rows)
        lo = int(c["start_ns"][rows].min())
        t0 = lo if t0 is None else min(t0, lo)
        key = np.stack([c["node"][rows].astype(np.int64), c["rank"][rows].astype(np.int64),
                        c["thread_id"][rows].astype(np.int64)], 1)
        for node, rank, thread in np.unique(key, axis=0).tolist():
            host = block.strings[node] if node < len(block.strings) else ""
            procs.add((host, rank))
            threads.add((host, rank, thread))
    pids = {k: i + 1 for i, k in enumerate(sorted(procs, key=lambda hr: (hr[1], hr[0])))}
    tids = {}
    for host, rank, thread in sorted(threads, key=lambda t: (pids[(t[0], t[1])], t[2])):
        tids[(pids[(host, rank)], thread)] = len(tids) + 1
    return t0 or 0, n, pids, tids


def _meta(pids: Dict[Tuple[str, int], int], tids: Dict[Tuple[int, int], int]):
    for (host, rank), pid in sorted(pids.items(), key=lambda kv: kv[1]):
        yield {"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
               "args": {"name": f"rank {rank}" + (f" ({host})" if host else "")}}
        yield {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
               "args": {"sort_index": rank}}
    for (pid, thread), tid in sorted(tids.items(), key=lambda kv: kv[1]):
        yield {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
               "args": {"name": f"thread {thread:x}"}}


def _event(d: dict, t0: int, pids, tids) -> dict:
    pid = pids[(d.get("hostname") or "", int(d["rank"]))]
    tid = tids[(pid, int(d["thread_id"]))]
    args = {"task_id": d["task_id"], "workflow_id": d["workflow_id"], "status": d["status"]}
    if d.get("parent_task_id"):
        args["parent_task_id"] = d["parent_task_id"]
    if d.get("tags"):
        args["tags"] = d["tags"]
    for k in ("used", "generated"):
        if d.get(k) not in (None, {}):
            args[k] = bounded(d[k])
    return {"name": d["activity_id"], "cat": d["status"], "ph": "X", "pid": pid, "tid": tid,
            "ts": (d["start_ns"] - t0) / 1e3, "dur": max(0, d["end_ns"] - d["start_ns"]) / 1e3,
            "args": args}


def write_trace(table: engine.Table, f, budget: Budget = UNBOUNDED, progress=None) -> dict:
    """Writes the trace of a table to the binary file ``f``; returns its metadata."""
    t0, n, pids, tids = _tracks(table, budget)
    if progress is not None:
        progress.total = max(n, 1)
    f.write(b'{"traceEvents":[')
    first = True
    for m in _meta(pids, tids):
        f.write((b"" if first else b",") + dumps(m))
        first = False
    for part in engine.stream(table, None, DEFAULT_SORT, _FIELDS, budget):
        f.write(b"".join((b"" if first and i == 0 else b",") + dumps(_event(d, t0, pids, tids))
                         for i, d in enumerate(part)))
        first = False
        if progress is not None:
            progress.update(len(part), len(part))
    meta = {"generator": "flowcept", "start_ns": t0, "tasks": n, "tracks": len(tids),
            "ranks": len(pids)}
    f.write(b'],"displayTimeUnit":"ms","metadata":' + dumps(meta) + b"}")
    return meta


def trace_events(docs: Iterable[dict]) -> dict:
    """The trace of some task documents, in memory (small answers; exports stream)."""
    docs = sorted(docs, key=lambda d: (d["start_ns"], d["task_id"]))
    t0 = docs[0]["start_ns"] if docs else 0
    procs = sorted({(d.get("hostname") or "", int(d["rank"])) for d in docs}, key=lambda hr: (hr[1], hr[0]))
    pids = {k: i + 1 for i, k in enumerate(procs)}
    tids: Dict[Tuple[int, int], int] = {}
    for pid, thread in sorted({(pids[(d.get("hostname") or "", int(d["rank"]))], int(d["thread_id"]))
                               for d in docs}):
        tids[(pid, thread)] = len(tids) + 1
    events = [_event(d, t0, pids, tids) for d in docs]
    return {"traceEvents": list(_meta(pids, tids)) + events, "displayTimeUnit": "ms",
            "metadata": {"generator": "flowcept", "start_ns": t0, "tasks": len(docs),
                         "tracks": len(tids), "ranks": len(pids)}}


def export_perfetto(source_path: str, out: Optional[str] = None, budget: Optional[float] = None,
                    progress: Optional[bool] = None) -> str:
    """Writes the trace of an archive (or store dir, or store URL) to ``out``
    (default: <name>.trace.json; a .gz name is gzipped) and returns the path.
    ``budget``: seconds before it stops (QueryTimeout; nothing is left
    behind); ``progress``: a bar on stderr (default: on a terminal)."""
    from flowcept.access.sources import open_source
    from flowcept.progress import Progress
    if out is None:
        base = os.path.basename(source_path.rstrip("/"))
        out = (base[:-3] if base.endswith(".h5") else base) + ".trace.json"
    src = open_source(source_path)
    tmp = f"{out}.tmp{os.getpid()}"
    bar = Progress(None, enabled=progress, label="perfetto", unit="tasks")
    try:
        with (gzip.open(tmp, "wb", compresslevel=6) if out.endswith(".gz") else open(tmp, "wb")) as f:
            write_trace(src.table, f, Budget(budget), bar)
        os.replace(tmp, out)
    finally:
        bar.close()
        src.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
