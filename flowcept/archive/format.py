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


# A row's place in the scan order (the archive merged into first, then the stores' rows as
# the index pass met them): ties of start_ns are broken by it.  Merged blocks carry it.
SEQ = ("seq", np.dtype("<i8"))
NAMES = [name for name, _dt in COLS] + [SEQ[0]]        # the order of Block.addr
_DTYPES = [dt for _n, dt in COLS] + [SEQ[1]]
_ITEMSIZE = np.array([dt.itemsize for dt in _DTYPES], np.uint64)
_INDEX = {name: i for i, name in enumerate(NAMES)}


def _layout(seq: bool):
    """[(position in NAMES, byte offset per row)]: a block's columns side by side in one
    buffer, widest first (so that every column is aligned)."""
    cols = [i for i in range(len(NAMES)) if seq or NAMES[i] != SEQ[0]]
    cols.sort(key=lambda i: -_DTYPES[i].itemsize)
    out, off = [], 0
    for i in cols:
        out.append((i, off))
        off += _DTYPES[i].itemsize
    return out, off


_LAYOUTS = {seq: _layout(seq) for seq in (False, True)}


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class Block:
    """Rows as one contiguous array per /tasks column (and "seq", once merged), with the few
    row operations the sort and merge need.  ``addr[i]`` is the address of column NAMES[i]
    (0: the block has no such column), what the C functions take; a block made by
    ``empty`` holds all its columns in one buffer."""

    __slots__ = ("cols", "n", "addr")

    def __init__(self, cols: Dict[str, np.ndarray], addr: Optional[np.ndarray] = None):
        self.cols = cols
        self.n = len(cols["start_ns"])
        if addr is None:
            addr = np.array([address(cols[name]) if name in cols else 0 for name in NAMES], np.uint64)
        self.addr = addr

    @staticmethod
    def empty(n: int, seq: bool = False) -> "Block":
        layout, row = _LAYOUTS[seq]
        buf = np.empty(max(n * row, 1), np.uint8)
        base = address(buf)
        cols = {}
        addr = np.zeros(len(NAMES), np.uint64)
        for i, off in layout:
            lo = n * off
            cols[NAMES[i]] = buf[lo:lo + n * _DTYPES[i].itemsize].view(_DTYPES[i])
            addr[i] = base + lo
        return Block({name: cols[name] for name in NAMES if name in cols}, addr)

    @property
    def has_seq(self) -> bool:
        return SEQ[0] in self.cols

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def slice(self, lo: int, hi: int) -> "Block":
        if lo == 0 and hi >= self.n:
            return self
        addr = self.addr + np.uint64(lo) * _ITEMSIZE
        addr[self.addr == 0] = 0
        return Block({k: v[lo:hi] for k, v in self.cols.items()}, addr)

    def take(self, idx: np.ndarray) -> "Block":
        out = Block.empty(len(idx), self.has_seq)
        for k, v in self.cols.items():
            np.take(v, idx, out=out.cols[k])
        return out


class Parts:
    """Blocks whose rows a merged order names (``part << ROW_BITS | row``, see
    flowcept.native.columns): the table of their columns' addresses (row i: column NAMES[i]
    of each part) and their lengths, as the C merge and gather take them."""

    __slots__ = ("blocks", "k", "table", "base", "lens", "lens_addr")

    def __init__(self, blocks: List[Block]):
        self.blocks = blocks
        self.k = len(blocks)
        self.table = np.stack([b.addr for b in blocks], axis=1) if blocks else \
            np.zeros((len(NAMES), 0), np.uint64)
        self.base = address(self.table)
        self.lens = np.array([len(b) for b in blocks], np.uint64)
        self.lens_addr = address(self.lens)

    def column(self, name: str) -> int:
        """The address of the parts' arrays of column ``name``."""
        return self.base + _INDEX[name] * self.k * 8


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
