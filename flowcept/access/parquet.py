"""A run as one Parquet file (``flowcept export --format parquet job.h5 -o job.parquet``),
for pandas, Polars, DuckDB and Spark to read directly.

One row per task, in start order (then task id), with the task documents'
field names: task_id, workflow_id, parent_task_id (null for top-level
tasks), activity_id, status, started_at, ended_at (epoch seconds),
start_ns, end_ns, rank, thread_id, hostname, and the payload fields used,
generated, tags, custom_metadata, error as JSON text (null when absent;
``--payload none`` leaves them out).  Written chunk by chunk from the read
path's columns (``flowcept.query.engine.ordered``): ids are hex digits made
with numpy, payloads JSON text written in C (``documents.payload_json``),
both handed to Arrow as buffers, never as Python strings; memory does not
grow with the run.  The values are those of ``documents.columns``.  Needs
pyarrow (``pip install 'flowcept[parquet]'``).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from flowcept.query import engine
from flowcept.query.documents import (DEFAULT_SORT, PAYLOAD_COLUMNS, TABLE_FIELDS, hex_id_bytes, payload_json,
                                      status_names)
from flowcept.query.limits import UNBOUNDED, Budget


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet export needs pyarrow: pip install 'flowcept[parquet]'") from None
    return pa, pq


def schema(payload: str = "json"):
    pa, _pq = _pyarrow()
    fields = [("task_id", pa.string()), ("workflow_id", pa.string()), ("parent_task_id", pa.string()),
              ("activity_id", pa.string()), ("status", pa.string()), ("started_at", pa.float64()),
              ("ended_at", pa.float64()), ("start_ns", pa.int64()), ("end_ns", pa.int64()),
              ("rank", pa.int64()), ("thread_id", pa.int64()), ("hostname", pa.string())]
    assert [f for f, _t in fields] == list(TABLE_FIELDS)
    if payload != "none":
        fields += [(f, pa.string()) for f in PAYLOAD_COLUMNS]
    return pa.schema(fields)


def write_parquet(table: engine.Table, path: str, payload: str = "json", cond: Optional[dict] = None,
                  budget: Budget = UNBOUNDED, progress=None, compression: str = "zstd") -> int:
    """Writes the matches of ``cond`` (all tasks by default) to ``path``
    (atomically: a temporary file renamed at the end); returns the rows written."""
    if payload not in ("json", "none"):
        raise ValueError("payload is json or none")
    pa, pq = _pyarrow()
    sch = schema(payload)
    tmp = f"{path}.tmp{os.getpid()}"
    n = 0
    try:
        with pq.ParquetWriter(tmp, sch, compression=compression) as w:
            for blocks, keys in engine.ordered(table, cond, DEFAULT_SORT, budget, 65536):
                for batch in _batches(pa, sch, blocks, keys.bid, keys.row, payload):
                    w.write_table(pa.Table.from_batches([batch], schema=sch))
                n += len(keys)
                if progress is not None:
                    progress.update(len(keys), len(keys))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


_RECORD = ("workflow_id", "task_id", "parent_id", "status", "start_ns", "end_ns", "rank", "thread_id")


def _batches(pa, sch, blocks, bid: np.ndarray, row: np.ndarray, payload: str):
    """Record batches (``sch``) of rows (``row[i]`` of ``blocks[bid[i]]``, in order);
    split in two while a payload column's text passes Arrow's 2 GiB of one array."""
    n = len(row)
    rec = {}
    acts, hosts = np.empty(n, object), np.empty(n, object)
    for b in np.unique(bid).tolist():
        at = np.flatnonzero(bid == b)
        blk, r = blocks[b], row[at]
        for name in _RECORD:
            col = blk.cols[name]
            rec.setdefault(name, np.empty(n, col.dtype))[at] = col[r]
        acts[at] = blk.names("activity", r)
        hosts[at] = blk.names("node", r)
    wf, pid = rec["workflow_id"], rec["parent_id"]
    start, end = rec["start_ns"].astype(np.int64), rec["end_ns"].astype(np.int64)
    cols = {"task_id": _ascii(pa, hex_id_bytes(wf, rec["task_id"])),
            "workflow_id": _ascii(pa, hex_id_bytes(wf)),
            "parent_task_id": _ascii(pa, hex_id_bytes(wf, pid), pid != 0),
            "activity_id": acts, "status": status_names(rec["status"]),
            "started_at": start / 1e9, "ended_at": end / 1e9, "start_ns": start, "end_ns": end,
            "rank": rec["rank"].astype(np.int64), "thread_id": rec["thread_id"].astype(np.int64),
            "hostname": hosts}
    if payload != "none":
        for f, (text, ends, present) in payload_json(blocks, bid, row).items():
            if len(text) >= 1 << 31:
                half = n // 2
                yield from _batches(pa, sch, blocks, bid[:half], row[:half], payload)
                yield from _batches(pa, sch, blocks, bid[half:], row[half:], payload)
                return
            offsets = np.zeros(n + 1, np.int32)
            offsets[1:] = ends
            cols[f] = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text),
                                                  _validity(pa, present), int(n - present.sum()))
    yield pa.RecordBatch.from_arrays([c if isinstance(c, pa.Array) else pa.array(c, type=f.type)
                                      for f, c in ((f, cols[f.name]) for f in sch)], schema=sch)


def _validity(pa, valid: np.ndarray):
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _ascii(pa, text: np.ndarray, valid: Optional[np.ndarray] = None):
    """A string array of fixed-width ASCII rows ((n, w) uint8; ``valid`` False: null)."""
    n, w = text.shape
    offsets = np.arange(n + 1, dtype=np.int32) * w
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(text)),
                                       None if valid is None else _validity(pa, valid),
                                       0 if valid is None else int(n - valid.sum()))


def export_parquet(source_path: str, out: Optional[str] = None, payload: str = "json",
                   budget: Optional[float] = None, progress: Optional[bool] = None) -> str:
    """Writes the Parquet file of an archive, store directory or store URL;
    returns its path (default <name>.parquet)."""
    from flowcept.access.sources import open_source
    from flowcept.progress import Progress
    if out is None:
        base = os.path.basename(source_path.rstrip("/"))
        out = (base[:-3] if base.endswith(".h5") else base) + ".parquet"
    src = open_source(source_path)
    bar = Progress(None, enabled=progress, label="parquet", unit="tasks")
    try:
        write_parquet(src.table, out, payload, None, Budget(budget), bar)
    finally:
        bar.close()
        src.close()
    return out
