"""A run as a Chrome/Perfetto trace (``flowcept export --format perfetto job.h5``).

Writes the Trace Event Format (JSON; opens in https://ui.perfetto.dev and
chrome://tracing): one process track per (host, rank), one thread track per
thread id in it, one complete ("X") event per task, named by its activity,
with task id, parent, status and workflow in ``args``.  Failed tasks carry
category ``ERROR``.  Times are microseconds since the first task started,
so the trace opens at zero; the absolute start is in ``metadata``.
"""
from __future__ import annotations

import gzip
import json
import os
from typing import Iterable, Optional


def trace_events(docs: Iterable[dict]) -> dict:
    docs = sorted(docs, key=lambda d: (d["start_ns"], d["task_id"]))
    t0 = docs[0]["start_ns"] if docs else 0
    pids = {}
    threads = {}
    events = []
    for d in docs:
        key = (d.get("hostname") or "", int(d["rank"]))
        pid = pids.setdefault(key, len(pids) + 1)
        tid = threads.setdefault((pid, int(d["thread_id"])), len(threads) + 1)
        args = {"task_id": d["task_id"], "workflow_id": d["workflow_id"], "status": d["status"]}
        if d.get("parent_task_id"):
            args["parent_task_id"] = d["parent_task_id"]
        if d.get("tags"):
            args["tags"] = d["tags"]
        events.append({"name": d["activity_id"], "cat": d["status"], "ph": "X", "pid": pid, "tid": tid,
                       "ts": (d["start_ns"] - t0) / 1e3,
                       "dur": max(0, d["end_ns"] - d["start_ns"]) / 1e3, "args": args})
    meta = []
    for (host, rank), pid in sorted(pids.items(), key=lambda kv: kv[1]):
        meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                     "args": {"name": f"rank {rank}" + (f" ({host})" if host else "")}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                     "args": {"sort_index": rank}})
    for (pid, thread), tid in sorted(threads.items(), key=lambda kv: kv[1]):
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                     "args": {"name": f"thread {thread:x}"}})
    return {"traceEvents": meta + events, "displayTimeUnit": "ms",
            "metadata": {"generator": "flowcept", "start_ns": t0, "tasks": len(docs),
                         "tracks": len(threads), "ranks": len(pids)}}


def export_perfetto(source_path: str, out: Optional[str] = None) -> str:
    """Writes the trace of an archive (or store dir) to ``out`` (default:
    <name>.trace.json; a .gz name is gzipped) and returns the path."""
    from flowcept.access.sources import Deadline, open_source
    src = open_source(source_path)
    try:
        trace = trace_events(src.find({}, Deadline(None)))
    finally:
        src.close()
    if out is None:
        base = os.path.basename(source_path.rstrip("/"))
        out = (base[:-3] if base.endswith(".h5") else base) + ".trace.json"
    text = json.dumps(trace, separators=(",", ":")).encode()
    tmp = f"{out}.tmp{os.getpid()}"
    with (gzip.open(tmp, "wb") if out.endswith(".gz") else open(tmp, "wb")) as f:
        f.write(text)
    os.replace(tmp, out)
    return out
