"""A run as one Parquet file (``flowcept export --format parquet job.h5 -o job.parquet``),
for pandas, Polars, DuckDB and Spark to read directly.

One row per task, in start order (then task id), with the task documents'
field names: task_id, workflow_id, parent_task_id (null for top-level
tasks), activity_id, status, started_at, ended_at (epoch seconds),
start_ns, end_ns, rank, thread_id, hostname, and the payload fields used,
generated, tags, custom_metadata, error as JSON text (null when absent;
``--payload none`` leaves them out).  Written column chunk by column chunk
from the read path (``flowcept.query.engine.ordered_columns``): memory does
not grow with the run.  Needs pyarrow (``pip install 'flowcept[parquet]'``).
"""
from __future__ import annotations

import os
from typing import Optional

from flowcept.query import engine
from flowcept.query.documents import DEFAULT_SORT, PAYLOAD_COLUMNS, TABLE_FIELDS
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
            for cols in engine.ordered_columns(table, cond, DEFAULT_SORT, payload, budget):
                arrays = [pa.array(cols[f.name], type=f.type, from_pandas=False) for f in sch]
                w.write_table(pa.Table.from_arrays(arrays, schema=sch))
                n += len(cols["task_id"])
                if progress is not None:
                    progress.update(len(cols["task_id"]), len(cols["task_id"]))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


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
