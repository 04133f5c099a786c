"""The archive file's layout as the writer lays it out (docs/archive-format.md): the /tasks
columns derived from the record dtype, the chunking, and the root attributes."""
from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from flowcept.archive import ARCHIVE_VERSION, MAGIC, columns
from flowcept.record.layout import RECORD_DTYPE

CHUNK_ROWS = 1 << 16          # rows per column chunk = rows per index block
BLOB_CHUNK = 1 << 20          # bytes per payload/doc blob chunk
COMPRESSIONS = ("gzip", "lzf", "none")

# The /tasks columns: name, dtype, in file order.  Rows are sorted and merged as one array
# per column.
COLS: List[Tuple[str, np.dtype]] = [(name, np.dtype(dt)) for name, _f, dt in columns()]
ROW_BYTES = sum(dt.itemsize for _n, dt in COLS)
# The columns read straight from a record field (the others are mapped -- activity,
# payload_off -- or constant per batch -- node, job)
FIELDS = [(name, fld) for name, fld, _dt in columns()
          if fld is not None and fld not in ("activity_id", "payload_off")]


class Block:
    """Rows as one contiguous array per /tasks column (so that the scan copies and the
    chunk compression read contiguous memory), with the few row operations the sort
    and merge need."""

    __slots__ = ("cols", "n")

    def __init__(self, cols: Dict[str, np.ndarray]):
        self.cols = cols
        self.n = len(cols["start_ns"])

    @staticmethod
    def empty(n: int) -> "Block":
        return Block({name: np.empty(n, dt) for name, dt in COLS})

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def slice(self, lo: int, hi: int) -> "Block":
        return Block({k: v[lo:hi] for k, v in self.cols.items()})

    def take(self, idx: np.ndarray) -> "Block":
        return Block({k: np.take(v, idx) for k, v in self.cols.items()})

    def copy(self) -> "Block":
        return Block({k: v.copy() for k, v in self.cols.items()})

    @staticmethod
    def concat(blocks: List["Block"]) -> "Block":
        return Block({name: np.concatenate([b.cols[name] for b in blocks]) for name, _dt in COLS})


def stamp() -> Tuple[str, int, str]:
    """When and where the file is written: (ISO time, ns since the epoch, host)."""
    return (datetime.now(timezone.utc).isoformat(timespec="seconds"), time.time_ns(),
            socket.gethostname())


def root_attributes(*, sources: Iterable[str], records: int, workflows: int, block_rows: int,
                    compression: str, jobs: List[str],
                    when: Optional[Tuple[str, int, str]] = None) -> dict:
    """The root attributes of an archive (docs/archive-format.md, "Root attributes")."""
    from flowcept import __version__
    created, created_ns, host = when or stamp()
    return {
        "format": MAGIC,
        "format_version": ARCHIVE_VERSION,
        "producer": f"flowcept {__version__}",
        "flowcept_version": __version__,
        "created": created,
        "created_ns": created_ns,
        "host": host,
        "sources": json.dumps(sorted(set(sources))),
        "record_count": records,
        "workflow_count": workflows,
        "sort_key": "start_ns",
        "index_block_rows": block_rows,
        "compression": compression,
        "record_dtype": json.dumps([[n, RECORD_DTYPE.fields[n][0].str] for n in RECORD_DTYPE.names]),
        "columns": json.dumps([[n, dt] for n, _f, dt in columns()]),
        "job": ",".join(jobs),
    }
