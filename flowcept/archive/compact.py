"""Compaction: a job's LMDB store(s) -> one HDF5 archive (docs/archive-format.md).

An offline step: it reads stores and writes a file, nothing else (recovery of
what a crashed job left behind is the caller's step before it: ``flowcept
compact --recover`` and the epilog run flowcept.node.recovery first).

Pipeline (numpy only, no per-record Python objects), in memory bounded by
``memory_bytes`` (configuration key ``compact_memory_bytes``, default 256 MiB)
whatever the number of records:

1. index pass: scan every batch of every store under the path (one store per
   node); batches already in the output archive (same batch key) are skipped.
   Per batch: its payload area is appended to the payload blob (records keep
   their offsets, moved by the blob position; the blob is compressed and
   written while the scan goes on), its strings go into the one global string
   table, and what is needed to read its rows again is kept (key, string map,
   payload offset, count, first and last start time).  The pages of the
   store's memory map are let go once a batch is read, so resident memory
   does not grow with the store.
2. the rows (the batch-local activity ids and the node name mapped to global
   string ids) are read again from the stores and sorted by start_ns, ties in
   scan order (the archive being merged into first), in one of three ways:
   - everything fits in the run buffer and nothing is merged into: one sort in
     memory, each chunk of each column gathered by the sort order in the pool;
   - chains (the usual case past that): batches are nearly time-ordered, a
     ring's batches one after the other, so the batches are grouped into
     chains whose start times never go back from one batch to the next; each
     chain is a sorted run as it lies in the store, and the chains (and the
     rows of the archive being merged into) are merged k-way reading one block
     of whole batches per chain at a time, the next one read ahead in a
     thread; nothing goes to a temporary file;
   - when one block per chain does not fit in the bound (very many chains):
     the run buffer, sorted when full and written as a sorted run to an
     anonymous temporary file next to the output (deleted by the kernel even if
     the process is killed), the runs merged k-way a bounded block each.
   Duplicates by (workflow_id, task_id) are dropped on the way (a task's records
   share its start time, so duplicates meet in the merged order; a finished
   record is kept over a RUNNING one, else the first).
3. the merged rows are cut into chunks; every column of a chunk is gathered,
   shuffled and deflated in a thread pool (zlib, or ISA-L's faster deflate when
   the optional ``isal`` package is installed; both release the GIL) and
   written with H5Dwrite_chunk, so compaction scales with the cores; lzf goes
   through h5py's filter pipeline.

Everything is written to a temporary file next to the output, fsynced and
renamed over the output: an interrupted compaction never leaves a
half-written archive under the final name, and merging into an existing
archive (append) leaves it intact until the new one is complete.
"""
from __future__ import annotations

import glob
import json
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

try:  # ISA-L deflate: same zlib streams, several times faster (optional)
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None

from flowcept.archive import ARCHIVE_VERSION, MAGIC, ArchiveError, columns
from flowcept.osutil import process_alive
from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX, RECORD_DTYPE, STATUS_RUNNING

CHUNK_ROWS = 1 << 16          # rows per column chunk = rows per index block
BLOB_CHUNK = 1 << 20          # bytes per payload/doc blob chunk
COMPRESSIONS = ("gzip", "lzf", "none")
DEFAULT_MEMORY = 256 << 20    # the configuration's default compact_memory_bytes
MIN_MEMORY = 16 << 20

# The /tasks columns: name, dtype.  Rows are sorted and merged as one array per column.
_COLS = [(name, np.dtype(dt)) for name, _f, dt in columns()]
ROW_BYTES = sum(dt.itemsize for _n, dt in _COLS)
# Scan-time bytes per row held: the row, and for its sort the permutation (8), timsort's
# scratch of up to half of it (4) and the sorted start times (8)
_SCAN_BYTES_PER_ROW = ROW_BYTES + 20
# Of memory_bytes, for the run buffer (the rest: compression pool, blob chunks, HDF5 caches).
# The scan's buffer is let go before the merge starts, so the two shares do not add up.
_SCAN_SHARE = 0.6
_MERGE_SHARE = 0.2            # of memory_bytes, for the merge's blocks (each round copies twice)
_MIN_BLOCK = 1024


@dataclass
class CompactReport:
    """What a compaction did."""
    output: str
    records: int = 0              # task records in the archive
    new_records: int = 0          # added by this compaction
    duplicates: int = 0           # dropped as already present (same workflow_id, task_id)
    batches: int = 0              # batches read
    skipped_batches: int = 0      # batches already in the archive
    workflows: int = 0
    stores: List[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    runs: int = 0                 # sorted runs written to the temporary file (0: all in memory)
    chains: int = 0               # chains of batches merged straight from the stores (0: none)
    memory_bytes: int = DEFAULT_MEMORY   # the memory bound it ran under

    def describe(self) -> str:
        rate = self.new_records / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.output}: {self.records} task records ({self.new_records} new"
                + (f", {self.duplicates} duplicates dropped" if self.duplicates else "")
                + (f", {self.skipped_batches} batches already archived" if self.skipped_batches else "")
                + f"), {self.workflows} workflow(s) from {len(self.stores)} store(s); "
                f"{self.bytes / max(self.records, 1):.1f} bytes/record, {self.seconds:.2f} s"
                + (f", {rate / 1e6:.2f} M records/s" if self.new_records else "")
                + (f", {self.runs} sorted runs merged within {self.memory_bytes >> 20} MiB"
                   if self.runs else "")
                + (f", {self.chains} chains of batches merged within {self.memory_bytes >> 20} MiB"
                   if self.chains else ""))


def _Progress(total: int, enabled: bool, label: str = "compacting"):
    from flowcept.progress import Progress
    return Progress(total, enabled, label, delay_s=0.0)


class _Strings:
    """The global string table: id of each distinct string, in first-seen order."""

    def __init__(self, initial=()):
        self.items: List[str] = list(initial)
        self.ids: Dict[str, int] = {s: i for i, s in enumerate(self.items)}
        self.id("")

    def id(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.items)
            self.items.append(s)
        return i


def _shuffle(chunk: np.ndarray) -> np.ndarray:
    """The bytes the HDF5 shuffle filter makes of a chunk (byte planes), as a contiguous
    array (numpy's strided copy runs without the GIL; ``tobytes`` of the transposed view
    would copy byte by byte holding it)."""
    isz = chunk.dtype.itemsize
    if isz == 1:
        return chunk
    return np.ascontiguousarray(chunk.view(np.uint8).reshape(-1, isz).T)


class _Writer:
    """Writes datasets with the chosen compression.  gzip: chunks are shuffled and
    deflated in a thread pool and written raw (H5Dwrite_chunk); the output
    is what HDF5's own shuffle+deflate filters would produce.  At most
    ``4 x threads`` chunks are in flight, which bounds the memory they hold."""

    def __init__(self, h5, compression: str, level: int, threads: int):
        self.h5 = h5
        self.compression = compression
        self.level = level
        self.direct = compression == "gzip"
        self.pool = ThreadPoolExecutor(max(threads, 1)) if self.direct else None
        self.owns_pool = True
        self.inflight: deque = deque()
        self.max_inflight = 4 * max(threads, 1)

    def sibling(self) -> "_Writer":
        """A writer for another thread: the same file and compression pool, its own chunks
        in flight."""
        w = _Writer.__new__(_Writer)
        w.h5, w.compression, w.level, w.direct = self.h5, self.compression, self.level, self.direct
        w.pool, w.owns_pool = self.pool, False
        w.inflight, w.max_inflight = deque(), self.max_inflight
        return w

    def create(self, name, dtype, n, chunk, shuffle=True):
        dtype = np.dtype(dtype)
        kw = {}
        if self.compression == "gzip":
            kw = dict(compression="gzip", compression_opts=self.level, shuffle=shuffle and dtype.itemsize > 1)
        elif self.compression == "lzf":
            kw = dict(compression="lzf", shuffle=shuffle and dtype.itemsize > 1)
        return self.h5.create_dataset(name, shape=(n,), maxshape=(None,), dtype=dtype,
                                      chunks=(chunk,), **kw)

    def column(self, name, dtype, n, chunk):
        """Creates the /tasks column ``name`` (n rows to start with, grown as chunks come)."""
        return self.create(f"tasks/{name}", dtype, n, chunk)

    def _drain(self, limit):
        while len(self.inflight) > limit:
            ds, off, fut = self.inflight.popleft()
            ds.id.write_direct_chunk((off,), fut.result())

    def write_chunk(self, ds, off: int, make: Callable[[], np.ndarray]):
        """Writes the chunk at element offset ``off``; ``make()`` returns its data
        (a full chunk unless it is the last one)."""
        if not self.direct:
            data = np.ascontiguousarray(make())
            ds[off:off + len(data)] = data
            return
        chunk = ds.chunks[0]
        level = self.level
        deflate = _isal.compress if _isal is not None and 1 <= level <= 3 else zlib.compress
        dtype = ds.dtype
        shuffle = ds.shuffle

        def job():
            data = np.ascontiguousarray(make())
            if len(data) < chunk:   # edge chunks are stored full size
                full = np.zeros(chunk, dtype)
                full[:len(data)] = data
                data = full
            raw = _shuffle(data) if shuffle else data.view(np.uint8)
            return deflate(raw, level)

        self.inflight.append((ds, off, self.pool.submit(job)))
        self._drain(self.max_inflight)

    def flush(self):
        self._drain(0)

    def close(self):
        try:
            self.flush()
        finally:
            if self.pool is not None and self.owns_pool:
                self.pool.shutdown(wait=True)


class _Blob:
    """A growing uint8 dataset (payloads) written chunk by chunk while it grows:
    data is copied once, into a chunk buffer, which is compressed and written
    when full."""

    def __init__(self, writer: _Writer, name: str):
        self.w = writer
        self.ds = writer.create(name, np.uint8, 0, BLOB_CHUNK, shuffle=False)
        self.size = 0                  # logical length
        self.flushed = 0               # bytes written out (whole chunks until close)
        self.cur = np.empty(BLOB_CHUNK, np.uint8)
        self.fill = 0

    def append(self, data) -> int:
        """Appends bytes; returns their offset in the blob."""
        off = self.size
        src = np.frombuffer(data, np.uint8)
        pos = 0
        while pos < len(src):
            take = min(BLOB_CHUNK - self.fill, len(src) - pos)
            self.cur[self.fill:self.fill + take] = src[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == BLOB_CHUNK:
                self._emit()
        self.size += len(src)
        return off

    def _emit(self):
        if not self.fill:
            return
        need = self.flushed + BLOB_CHUNK
        if self.ds.shape[0] < need:
            self.ds.resize((max(need, 2 * self.ds.shape[0]),))
        data = self.cur[:self.fill]
        self.w.write_chunk(self.ds, self.flushed, lambda: data)
        self.flushed += BLOB_CHUNK
        self.cur = np.empty(BLOB_CHUNK, np.uint8)
        self.fill = 0

    def copy_raw_chunks(self, src_ds) -> bool:
        """Copies the compressed chunks of an equal-layout blob as they are.  Must be
        called first, on an empty blob; returns False when layouts differ."""
        same = (self.w.direct and src_ds.chunks == self.ds.chunks
                and src_ds.compression == "gzip" and not src_ds.shuffle)
        if not same or self.size:
            return False
        n = src_ds.shape[0]
        if n:
            self.ds.resize((-(-n // BLOB_CHUNK) * BLOB_CHUNK,))
            self.w.flush()
            for off in range(0, n, BLOB_CHUNK):
                mask, raw = src_ds.id.read_direct_chunk((off,))
                self.ds.id.write_direct_chunk((off,), raw, filter_mask=mask)
        self.size = self.flushed = -(-n // BLOB_CHUNK) * BLOB_CHUNK
        return True

    def close(self):
        self._emit()
        self.w.flush()
        self.ds.resize((self.size,))


# --------------------------------------------------------------------------- sorted runs


class _Block:
    """Rows as one contiguous array per /tasks column (so that the scan copies and the
    chunk compression read contiguous memory), with the few row operations the sort
    and merge need."""

    __slots__ = ("cols", "n")

    def __init__(self, cols: Dict[str, np.ndarray]):
        self.cols = cols
        self.n = len(cols["start_ns"])

    @staticmethod
    def empty(n: int) -> "_Block":
        return _Block({name: np.empty(n, dt) for name, dt in _COLS})

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def slice(self, lo: int, hi: int) -> "_Block":
        return _Block({k: v[lo:hi] for k, v in self.cols.items()})

    def take(self, idx: np.ndarray) -> "_Block":
        return _Block({k: np.take(v, idx) for k, v in self.cols.items()})

    def copy(self) -> "_Block":
        return _Block({k: v.copy() for k, v in self.cols.items()})

    @staticmethod
    def concat(blocks: List["_Block"]) -> "_Block":
        return _Block({name: np.concatenate([b.cols[name] for b in blocks]) for name, _dt in _COLS})


class _MemRun:
    """The only run, held in memory (everything fitted): the scan buffer and its sort
    order, gathered a block at a time (no sorted copy of the whole)."""

    def __init__(self, rows: _Block, order: Optional[np.ndarray]):
        self.rows, self.order, self.pos, self.n = rows, order, 0, len(rows)

    def read(self, n: int) -> _Block:
        hi = min(self.pos + n, self.n)
        out = (self.rows.slice(self.pos, hi) if self.order is None
               else self.rows.take(self.order[self.pos:hi]))
        self.pos = hi
        if hi >= self.n:
            self.rows = self.order = None    # let the buffer go once all of it is handed out
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n


def _pread_into(fd: int, arr: np.ndarray, offset: int):
    view = memoryview(arr.view(np.uint8))
    got = 0
    while got < len(view):
        k = os.preadv(fd, [view[got:]], offset + got)
        if k <= 0:
            raise ArchiveError("the temporary run file of the compaction was truncated")
        got += k


class _FileRun:
    """A sorted run in the temporary file: ``count`` rows, each column contiguous from
    its byte offset."""

    def __init__(self, fd: int, offsets: Dict[str, int], count: int):
        self.fd, self.offsets, self.count, self.pos = fd, offsets, count, 0

    def read(self, n: int) -> _Block:
        hi = min(self.pos + n, self.count)
        out = _Block.empty(hi - self.pos)
        for name, dt in _COLS:
            _pread_into(self.fd, out.cols[name], self.offsets[name] + self.pos * dt.itemsize)
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.count


class _ArchiveRun:
    """The rows of the archive being merged into (already sorted), read block by block."""

    def __init__(self, h5, block_rows: int = 0):
        self.ds = [(name, h5[f"tasks/{name}"]) for name, _dt in _COLS]
        self.n = self.ds[0][1].shape[0]
        self.pos = 0
        self.block_rows = block_rows

    def read_block(self) -> _Block:
        """The next block, with the rows' positions (they come first in the scan order)."""
        lo = self.pos
        out = self.read(self.block_rows)
        out.cols["seq"] = np.arange(lo, self.pos, dtype=np.int64)
        return out

    def read(self, n: int) -> _Block:
        hi = min(self.pos + n, self.n)
        out = _Block({name: ds[self.pos:hi] for name, ds in self.ds})
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n


class _Runs:
    """Collects scanned rows into sorted runs within a memory bound."""

    def __init__(self, capacity_rows: int, expect: int, spill_dir: str):
        self.cap = max(capacity_rows, _MIN_BLOCK)
        self.buf = _Block.empty(max(min(self.cap, expect), 1))
        self.n = 0
        self.spill_dir = spill_dir
        self.file = None
        self.size = 0
        self.runs: List[object] = []
        self.spilled = 0

    def reserve(self, m: int) -> Dict[str, np.ndarray]:
        """Views of m free rows at the end of the buffer (spills a full run first)."""
        if self.n + m > len(self.buf):
            if self.n + m > self.cap and self.n:
                self._spill()
            if self.n + m > len(self.buf):
                grown = _Block.empty(max(self.n + m, min(2 * len(self.buf), self.cap)))
                for name, c in grown.cols.items():
                    c[:self.n] = self.buf.cols[name][:self.n]
                self.buf = grown
        return {k: v[self.n:self.n + m] for k, v in self.buf.cols.items()}

    def commit(self, m: int):
        self.n += m

    def _sorted(self) -> Tuple[_Block, Optional[np.ndarray]]:
        rows = self.buf.slice(0, self.n)
        start = rows["start_ns"]
        if self.n < 2 or np.all(start[1:] >= start[:-1]):
            return rows, None
        return rows, np.argsort(start, kind="stable")

    def _write(self, data: np.ndarray):
        view = memoryview(np.ascontiguousarray(data).view(np.uint8))
        done = 0
        while done < len(view):
            done += os.pwrite(self.file.fileno(), view[done:], self.size + done)
        self.size += len(view)

    def _spill(self):
        rows, order = self._sorted()
        if self.file is None:
            # anonymous (O_TMPFILE where available): the kernel removes it even after SIGKILL;
            # next to the output because /tmp may be memory (tmpfs)
            self.file = tempfile.TemporaryFile(dir=self.spill_dir, prefix=".flowcept-compact-")
        offsets = {}
        step = CHUNK_ROWS
        for name, _dt in _COLS:
            offsets[name] = self.size
            col = rows[name]
            for lo in range(0, self.n, step):
                hi = min(lo + step, self.n)
                self._write(col[lo:hi] if order is None else np.take(col, order[lo:hi]))
        self.runs.append(_FileRun(self.file.fileno(), offsets, self.n))
        self.spilled += 1
        self.n = 0

    def finish(self, others: int) -> List[object]:
        """The runs, in scan order.  The last one stays in memory when it is the only
        source of the merge (``others``: sources besides the runs), else it is written
        out too, so that the merge holds only its blocks."""
        if self.n:
            if self.runs or others:
                self._spill()
            else:
                rows, order = self._sorted()
                self.runs.append(_MemRun(rows, order))
                self.n = 0
        self.buf = None
        return self.runs

    def close(self):
        self.buf = None
        if self.file is not None:
            self.file.close()
            self.file = None


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


def _duplicates(s: np.ndarray, col: Callable[[str, np.ndarray], np.ndarray]) -> Optional[np.ndarray]:
    """Positions to drop from rows sorted by start_ns ``s`` (ties in input order): the
    duplicates by (workflow_id, task_id) among rows of equal start_ns; the first finished
    record is kept, else the first.  ``col(name, positions)`` gives a column at positions.
    A 64-bit mix of the key finds candidates among the tied rows; candidates are compared
    exactly.  None when there is nothing to drop."""
    if len(s) < 2:
        return None
    eq = s[1:] == s[:-1]
    if not eq.any():
        return None
    mask = np.zeros(len(s), bool)
    mask[1:] |= eq
    mask[:-1] |= eq
    cand = np.flatnonzero(mask)
    h = ((col("workflow_id", cand) * _K1) ^ col("task_id", cand)) + s[cand].view(np.uint64) * _K2
    hs = np.sort(h)
    dup_h = hs[1:][hs[1:] == hs[:-1]]
    if not len(dup_h):
        return None
    cand = cand[np.isin(h, dup_h)]
    wf, tid, st = col("workflow_id", cand), col("task_id", cand), s[cand]
    running = (col("status", cand) == STATUS_RUNNING).astype(np.uint8)
    o = np.lexsort((cand, running, tid, wf, st))
    wf, tid, st = wf[o], tid[o], st[o]
    first = np.ones(len(o), bool)
    first[1:] = (wf[1:] != wf[:-1]) | (tid[1:] != tid[:-1]) | (st[1:] != st[:-1])
    if first.all():
        return None
    return cand[o[~first]]


def _dedupe_sorted(rows: _Block) -> Tuple[_Block, int]:
    """rows without their duplicates (see _duplicates), and how many were dropped."""
    drop = _duplicates(rows["start_ns"], lambda name, pos: rows[name][pos])
    if drop is None:
        return rows, 0
    keep = np.ones(len(rows), bool)
    keep[drop] = False
    return rows.take(np.flatnonzero(keep)), len(drop)


def _merge(runs: List[object], block_rows: int, emit: Callable[[_Block], None]) -> int:
    """Merges sorted runs k-way into ``emit`` (sorted by start_ns, ties in run order then
    row order), a block of each run at a time, dropping duplicates; returns how many."""
    blocks = [r.read(block_rows) for r in runs]
    carry = None
    dropped = 0
    while True:
        for i, r in enumerate(runs):
            if not len(blocks[i]) and not r.exhausted:
                blocks[i] = r.read(block_rows)
        live = [i for i in range(len(runs)) if len(blocks[i])]
        if not live:
            break
        pending = [i for i in live if not runs[i].exhausted]
        parts = [] if carry is None else [carry]
        if pending:
            # every row not read yet sorts after the smallest (last start, run) of the blocks
            # of unfinished runs: everything up to it can go out
            bs, br = min((int(blocks[i]["start_ns"][-1]), i) for i in pending)
            for i in live:
                b = blocks[i]
                c = int(np.searchsorted(b["start_ns"], bs, "right" if i <= br else "left"))
                if c:
                    parts.append(b.slice(0, c))
                    blocks[i] = b.slice(c, len(b))
        else:
            parts.extend(blocks[i] for i in live)
            blocks = [b.slice(0, 0) for b in blocks]
        merged = parts[0] if len(parts) == 1 else _Block.concat(parts)
        s = merged["start_ns"]
        if len(parts) > 1 and not np.all(s[1:] >= s[:-1]):
            merged = merged.take(np.argsort(s, kind="stable"))
        merged, d = _dedupe_sorted(merged)
        dropped += d
        carry = None
        if pending and len(merged):
            # rows of the last start time may have duplicates still unread: keep them back
            s = merged["start_ns"]
            cut = int(np.searchsorted(s, s[-1], "left"))
            carry = merged.slice(cut, len(merged)).copy()
            merged = merged.slice(0, cut)
        if len(merged):
            emit(merged)
    if carry is not None and len(carry):
        emit(carry)
    return dropped


# --------------------------------------------------------------------------- chains of batches

# The /tasks columns read straight from a batch's records (the others are mapped or constant)
_FIELDS = [(name, fld) for name, fld, _dt in columns()
           if fld is not None and fld not in ("activity_id", "payload_off")]
# Chain merge bytes per row held: a block (row + its scan position), the next one read ahead,
# the round's concatenation of the blocks' heads, and the chunks gathered from it in flight
_CHAIN_BYTES_PER_ROW = 4 * (ROW_BYTES + 8)
_MAX_CHAINS = 512
_MAX_OPEN_STORES = 128      # stores open at once in the row and payload passes
_READ_AHEAD = 32 << 20      # bytes of a store asked for ahead of the index pass (cold stores)


class _BatchRef:
    """What the index pass learnt of a batch of task records: enough to read its rows again."""

    __slots__ = ("store", "key", "m", "smin", "smax", "seq", "base", "lut", "node", "job",
                 "only_tasks")

    def __init__(self, store, key, m, smin, smax, seq, base, lut, node, job, only_tasks):
        self.store, self.key, self.m, self.smin, self.smax = store, key, m, smin, smax
        self.seq = seq                 # scan position of its first row (ties sort by it)
        self.base, self.lut, self.node, self.job = base, lut, node, job
        self.only_tasks = only_tasks   # no workflow records among its records


def _fill_rows(frame, ref: _BatchRef, cols: Dict[str, np.ndarray], lo: int):
    """The archive rows of a batch into ``cols[name][lo:lo + ref.m]``."""
    from flowcept.native.batch import Batch
    recs = Batch(frame, check=False).records
    if not ref.only_tasks:
        recs = recs[(recs["flags"] & FLAG_WORKFLOW) == 0]
    if len(recs) != ref.m:
        raise ArchiveError("a batch changed while it was being compacted")
    hi = lo + ref.m
    for name, fld in _FIELDS:
        cols[name][lo:hi] = recs[fld]
    lut = ref.lut
    np.take(lut, np.minimum(recs["activity_id"], len(lut) - 1), out=cols["activity"][lo:hi])
    np.add(recs["payload_off"], np.uint64(ref.base), out=cols["payload_off"][lo:hi], casting="unsafe")
    cols["node"][lo:hi] = ref.node
    cols["job"][lo:hi] = ref.job


class _Reader:
    """The stores, opened for reading batches again by key, in any order, from several
    threads.  A store is opened once (an LMDB environment must not be opened twice in one
    process) and shared; at most ``_MAX_OPEN_STORES`` stay open (each maps its whole map
    size of address space), the least recently used idle one closed first."""

    def __init__(self, stores: List[str], open_store_at):
        from collections import OrderedDict
        self.paths, self.open_store_at = stores, open_store_at
        self.open: "OrderedDict[int, object]" = OrderedDict()
        self.users: Dict[int, int] = {}
        self.lock = threading.Lock()
        self.release = _MapRelease()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.pending = None     # the maps go away with the stores
        with self.lock:
            while self.open:
                self.open.popitem(last=False)[1].close()

    def _acquire(self, i: int):
        with self.lock:
            st = self.open.get(i)
            if st is None:
                while len(self.open) >= _MAX_OPEN_STORES:
                    idle = next((k for k in self.open if not self.users.get(k)), None)
                    if idle is None:
                        break
                    self.open.pop(idle).close()
                st = self.open[i] = self.open_store_at(self.paths[i])
            self.open.move_to_end(i)
            self.users[i] = self.users.get(i, 0) + 1
            return st

    def _release(self, i: int):
        with self.lock:
            self.users[i] -= 1

    def frames(self, refs: List[_BatchRef], release: Optional["_MapRelease"] = None):
        """(ref, frame) for each ref, in order; a frame is valid until the next one.  The
        previous frame's mapped pages are let go as the next one comes (nothing is read
        ahead: the index pass did, for the whole store).  Each thread passes its own
        ``release``."""
        release = release or self.release
        i = 0
        while i < len(refs):
            j = i
            while j < len(refs) and refs[j].store == refs[i].store:
                j += 1
            group = refs[i:j]
            got = 0
            store = refs[i].store
            st = self._acquire(store)
            try:
                for key, frame in st.scan(keys=[r.key for r in group], zero_copy=True):
                    if got >= len(group) or bytes(key) != group[got].key:
                        raise ArchiveError("a batch disappeared from its store during compaction")
                    release.next(frame, span=0)
                    yield group[got], frame
                    got += 1
            finally:
                release.flush()          # while the store's map is still there
                self._release(store)
            if got != len(group):
                raise ArchiveError("a batch disappeared from its store during compaction")
            i = j


def _archive_block(chain_rows: int) -> int:
    return max(_MIN_BLOCK, chain_rows // 8)


def _plan_chains(refs: List[_BatchRef], budget_rows: int):
    """Batches (in scan order) grouped into chains, each a sequence whose start times never
    go down from one batch to the next (a ring's batches, nearly always): each chain is a
    sorted run without being sorted as a whole, so the merge can read the store directly.
    A batch joins the chain whose last start is the latest at or before its first start.
    Returns [(chain, block rows)], or None when one block per chain would not fit in
    ``budget_rows`` (then the rows go through sorted runs in the temporary file)."""
    import bisect
    tails: List[int] = []            # chains' last start times, ascending
    open_chains: List[list] = []     # in the order of tails
    chains: List[list] = []
    widest: List[int] = []
    need = 0
    for ref in refs:
        i = bisect.bisect_right(tails, ref.smin) - 1
        if i < 0:
            c = [ref]
            chains.append(c)
            widest.append(ref.m)
            c_id = len(chains) - 1
            need += ref.m
            if len(chains) > _MAX_CHAINS:
                return None
        else:
            tails.pop(i)
            c_id, c = open_chains.pop(i)
            c.append(ref)
            if ref.m > widest[c_id]:
                need += ref.m - widest[c_id]
                widest[c_id] = ref.m
        if need > budget_rows:
            return None
        j = bisect.bisect_right(tails, ref.smax)
        tails.insert(j, ref.smax)
        open_chains.insert(j, (c_id, c))
    if not chains:
        return None
    spare = (budget_rows - need) // len(chains)
    return [(c, widest[i] + spare) for i, c in enumerate(chains)]


class _ChainRun:
    """A chain of batches read from the stores a block (whole batches) at a time, each block
    sorted by (start_ns, scan position).  The next block is read ahead in the reader thread
    while the merge works on this one."""

    def __init__(self, refs: List[_BatchRef], block_rows: int, reader: _Reader, ahead):
        self.refs, self.block_rows, self.reader, self.ahead = refs, block_rows, reader, ahead
        self.pos = 0
        self.next = None

    @property
    def exhausted(self) -> bool:
        return self.next is None and self.pos >= len(self.refs)

    def _submit(self):
        lo, total = self.pos, self.refs[self.pos].m
        hi = lo + 1
        while hi < len(self.refs) and total + self.refs[hi].m <= self.block_rows:
            total += self.refs[hi].m
            hi += 1
        self.pos = hi
        self.next = self.ahead.submit(self._read, self.refs[lo:hi], total)

    def read_block(self) -> _Block:
        if self.next is None:
            self._submit()
        block = self.next.result()
        self.next = None
        if self.pos < len(self.refs):
            self._submit()
        return block

    def _read(self, refs: List[_BatchRef], total: int) -> _Block:
        cols = {name: np.empty(total, dt) for name, dt in _COLS}
        seq = cols["seq"] = np.empty(total, np.int64)
        at = 0
        for ref, frame in self.reader.frames(refs):
            _fill_rows(frame, ref, cols, at)
            seq[at:at + ref.m] = np.arange(ref.seq, ref.seq + ref.m)
            at += ref.m
        self.reader.release.flush()
        block = _Block(cols)
        s = block["start_ns"]
        if total > 1 and not np.all(s[1:] >= s[:-1]):   # a batch not in start order itself
            block = block.take(np.argsort(s, kind="stable"))
        return block


def _keyed_concat(parts: List[_Block]) -> _Block:
    return _Block({name: np.concatenate([p.cols[name] for p in parts]) for name in parts[0].cols})


def _in_order(parts: List[_Block]) -> bool:
    """Whether blocks, each sorted by (start_ns, seq), are sorted one after the other."""
    for a, b in zip(parts, parts[1:]):
        sa, sb = int(a["start_ns"][-1]), int(b["start_ns"][0])
        if sa > sb or (sa == sb and int(a["seq"][-1]) > int(b["seq"][0])):
            return False
    return True


def _key_order(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The positions of rows in (s, q) order: a stable sort by s, then only the groups of
    equal s put in q order (ties are a small part of the rows)."""
    order = np.argsort(s, kind="stable")
    so = s[order]
    eq = so[1:] == so[:-1]
    if eq.any():
        tied = np.zeros(len(s), bool)
        tied[1:] |= eq
        tied[:-1] |= eq
        at = np.flatnonzero(tied)          # whole groups of equal s, in s order
        rows = order[at]
        order[at] = rows[np.lexsort((q[rows], so[at]))]
    return order


def _merge_keyed(sources: List[object], emit: Callable[..., None]) -> int:
    """Merges sources of blocks sorted by (start_ns, seq) -- seq a row's position in the
    scan order, the archive's rows first -- into ``emit``, dropping duplicates (see
    _duplicates); returns how many.  The order is the stable sort of all rows by start_ns
    in scan order: what the in-memory sort and the sorted runs give."""
    blocks = [s.read_block() for s in sources]
    carry = None
    dropped = 0
    while True:
        for i, s in enumerate(sources):
            if not len(blocks[i]) and not s.exhausted:
                blocks[i] = s.read_block()
        live = [i for i in range(len(sources)) if len(blocks[i])]
        if not live:
            break
        pending = [i for i in live if not sources[i].exhausted]
        parts = [] if carry is None else [carry]
        if pending:
            # a source's unread rows sort after the last row of its block: every row up to
            # the least such last row can go out
            bs, bq = min((int(blocks[i]["start_ns"][-1]), int(blocks[i]["seq"][-1])) for i in pending)
            for i in live:
                b = blocks[i]
                st = b["start_ns"]
                c = int(np.searchsorted(st, bs, "left"))
                e = int(np.searchsorted(st, bs, "right"))
                if e > c:
                    c += int(np.searchsorted(b["seq"][c:e], bq, "right"))
                if c:
                    parts.append(b.slice(0, c) if c < len(b) else b)
                    blocks[i] = b.slice(c, len(b))
        else:
            parts.extend(blocks[i] for i in live)
            blocks = [b.slice(0, 0) for b in blocks]
        merged = parts[0] if len(parts) == 1 else _keyed_concat(parts)
        order = None       # positions of merged in (start_ns, seq) order; None: as it is
        s = merged["start_ns"]
        if not _in_order(parts):
            order = _key_order(s, merged["seq"])
            s = s[order]
        drop = _duplicates(s, (lambda name, pos: merged[name][pos]) if order is None
                           else (lambda name, pos: merged[name][order[pos]]))
        if drop is not None:
            keep = np.ones(len(s), bool)
            keep[drop] = False
            kept = np.flatnonzero(keep)
            order = kept if order is None else order[kept]
            s = s[kept]
            dropped += len(drop)
        n = len(s)
        cut = n
        if pending and n:
            # rows of the last start time may have duplicates still unread: keep them back
            cut = int(np.searchsorted(s, s[-1], "left"))
        carry = None
        if cut < n:
            carry = merged.slice(cut, n).copy() if order is None else merged.take(order[cut:])
        if cut:
            if order is None:
                emit(merged if cut == len(merged) else merged.slice(0, cut))
            else:
                emit(merged, order[:cut])
    if carry is not None and len(carry):
        emit(carry)
    return dropped


def _gather(col: np.ndarray, sel) -> np.ndarray:
    return col[sel] if isinstance(sel, slice) else np.take(col, sel)


def _gather_pieces(pieces: List[Tuple[_Block, object]], name: str, m: int, dtype) -> np.ndarray:
    """One column of a chunk, from its pieces (rows, slice or positions)."""
    if len(pieces) == 1:
        rows, sel = pieces[0]
        return _gather(rows.cols[name], sel)
    out = np.empty(m, dtype)
    at = 0
    for rows, sel in pieces:
        col = rows.cols[name]
        if isinstance(sel, slice):
            k = sel.stop - sel.start
            out[at:at + k] = col[sel]
        else:
            k = len(sel)
            np.take(col, sel, out=out[at:at + k])
        at += k
    return out


class _TaskColumns:
    """The /tasks columns and the /index, written chunk by chunk from merged rows."""

    def __init__(self, writer: _Writer, expect: int, chunk: int):
        self.w = writer
        self.chunk = chunk
        self.ds = {name: writer.column(name, dt, max(expect, 0), chunk) for name, dt in _COLS}
        self.pieces: List[Tuple[_Block, object]] = []   # rows of the chunk being filled
        self.fill = 0
        self.n = 0
        self.start_min: List[int] = []
        self.start_max: List[int] = []
        self.end_max: List[int] = []

    def append(self, rows: _Block, order: Optional[np.ndarray] = None):
        """Appends rows (``rows`` in the order ``order`` -- positions -- when given).  Rows
        are not copied here: each chunk of each column is gathered from its pieces inside
        the compression pool, in parallel."""
        n = len(rows) if order is None else len(order)
        pos = 0
        while pos < n:
            take = min(self.chunk - self.fill, n - pos)
            sel = slice(pos, pos + take) if order is None else order[pos:pos + take]
            self.pieces.append((rows, sel))
            self.fill += take
            pos += take
            if self.fill == self.chunk:
                self._emit()

    def _emit(self):
        pieces, m = self.pieces, self.fill
        self.pieces, self.fill = [], 0
        off = self.n
        if self.ds["task_id"].shape[0] < off + m:
            size = max(off + m, 2 * self.ds["task_id"].shape[0])
            for ds in self.ds.values():
                ds.resize((size,))
        first, fsel = pieces[0]
        last, lsel = pieces[-1]
        self.start_min.append(int(first["start_ns"][fsel][0]))
        self.start_max.append(int(last["start_ns"][lsel][-1]))
        self.end_max.append(max(int(_gather(rows["end_ns"], sel).max()) for rows, sel in pieces))
        for name, ds in self.ds.items():
            self.w.write_chunk(ds, off, lambda name=name, dt=ds.dtype: _gather_pieces(pieces, name, m, dt))
        self.n += m

    def write_gathered(self, run: "_MemRun") -> int:
        """Writes the only run (everything fitted in memory) without the merge: duplicates
        found on the sorted start times, then each chunk of each column gathered by the
        sort order inside the compression pool, in parallel.  Returns how many duplicates."""
        assert self.n == 0 and not self.fill
        rows, order = run.rows, run.order
        start = rows["start_ns"]
        s = start if order is None else np.take(start, order)
        pick = (lambda name, pos: rows[name][pos]) if order is None else \
            (lambda name, pos: rows[name][order[pos]])
        drop = _duplicates(s, pick)
        if drop is not None:
            keep = np.ones(len(s), bool)
            keep[drop] = False
            keep_pos = np.flatnonzero(keep)
            order = keep_pos if order is None else order[keep_pos]
            s = s[keep_pos]
        n = len(s)
        if self.ds["task_id"].shape[0] < n:
            for ds in self.ds.values():
                ds.resize((n,))
        end = rows["end_ns"]
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            self.start_min.append(int(s[lo]))
            self.start_max.append(int(s[hi - 1]))
            self.end_max.append(int((end[lo:hi] if order is None else np.take(end, order[lo:hi])).max()))
            for name, ds in self.ds.items():
                c = rows.cols[name]
                self.w.write_chunk(ds, lo, (lambda c=c, lo=lo, hi=hi: c[lo:hi]) if order is None
                                   else (lambda c=c, idx=order[lo:hi]: np.take(c, idx)))
        self.n = n
        return 0 if drop is None else len(drop)

    def close(self, h5):
        if self.fill:
            self._emit()
        self.w.flush()
        for ds in self.ds.values():
            ds.resize((self.n,))
        ig = h5.create_group("index")
        ig.attrs["block_rows"] = self.chunk
        for nm in ("start_min", "start_max", "end_max"):
            ig.create_dataset(nm, data=np.array(getattr(self, nm), "<i8"))


class _MapRelease:
    """Pages of the stores' memory maps around zero-copy frames.

    Read ahead: the stores are opened with readahead off (the right choice for their
    random reads), so a cold page faults in alone, 4 KiB per disk read, ten times slower
    than reading the file in order here.  Before a frame is read, MADV_WILLNEED asks for
    its pages (and, scanning in order, for a window ahead of it) in large asynchronous
    reads.  Release: once a frame has been copied its pages are dropped from this
    process's page tables (MADV_DONTNEED): the data stays in the page cache, but the
    process's resident size no longer grows with the store.  Both only inside a shared
    mapping of a file (checked against /proc/self/maps: never on heap memory); elsewhere
    no-ops."""

    _STEP = 128 << 10        # per MADV_WILLNEED call: the kernel reads at most about this much

    def __init__(self):
        self.ranges: List[Tuple[int, int]] = []
        self.pending: Optional[Tuple[int, int]] = None
        self.libc = None
        self.refreshes = 0
        self.ahead_lo = self.ahead_hi = 0
        try:
            import ctypes
            import mmap
            self.page = mmap.PAGESIZE
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self.libc = libc
            self.advice = getattr(mmap, "MADV_DONTNEED", 4)
            self.willneed = getattr(mmap, "MADV_WILLNEED", 3)
        except (OSError, AttributeError, ImportError):
            self.libc = None

    def _refresh(self):
        self.refreshes += 1
        ranges = []
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) < 6 or not parts[5].strip().startswith("/"):
                        continue
                    perms = parts[1]
                    if perms[0] != "r" or perms[3] != "s":
                        continue
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
        except OSError:
            self.libc = None
        self.ranges = ranges

    def _range_of(self, lo: int, hi: int) -> Optional[Tuple[int, int]]:
        for a, b in self.ranges:
            if a <= lo and hi <= b:
                return a, b
        if self.refreshes > 64:      # not a file mapping after all: stop looking
            return None
        self._refresh()
        for a, b in self.ranges:
            if a <= lo and hi <= b:
                return a, b
        return None

    def next(self, frame, span: Optional[int] = None, window: int = 0):
        """Called with each frame as it arrives, before it is read: releases the previous
        one (copied by now; its address was taken while its view was valid) and reads
        ahead the first ``span`` bytes of this one (all of it by default) and, when
        ``window``, that many bytes past it (a scan in file order)."""
        self.flush()
        if self.libc is None or not isinstance(frame, memoryview) or not frame.nbytes:
            return
        addr = np.frombuffer(frame, np.uint8).ctypes.data
        lo = -(-addr // self.page) * self.page
        hi = (addr + frame.nbytes) // self.page * self.page
        if hi > lo:
            self.pending = (lo, hi)
        n = frame.nbytes if span is None else min(span, frame.nbytes)
        if n or window:
            self._ahead(addr, n, window)

    def _ahead(self, addr: int, n: int, window: int):
        start = addr // self.page * self.page
        end = addr + n
        rng = self._range_of(start, end)
        if rng is None:
            return
        if window:
            if not self.ahead_lo <= start <= self.ahead_hi:      # not where the last one was
                self.ahead_lo = self.ahead_hi = start
            target = min(end + window, rng[1]) // self.page * self.page   # madvise wants pages
            if self.ahead_hi >= end and target - self.ahead_hi < window // 4:
                return                                          # enough is on its way
            a = max(self.ahead_hi, start)
            self.ahead_hi = target
        else:
            a, target = start, min(end, rng[1])
        step = self._STEP
        while a < target:
            self.libc.madvise(a, min(step, target - a), self.willneed)
            a += step

    def flush(self):
        if self.pending is None:
            return
        lo, hi = self.pending
        self.pending = None
        if self._range_of(lo, hi) is not None:
            self.libc.madvise(lo, hi - lo, self.advice)


# --------------------------------------------------------------------------- the job


def _job_of_store(store_path: str, workflows: dict) -> str:
    parent = os.path.dirname(os.path.abspath(store_path))
    if os.path.basename(parent) == "store":
        return os.path.basename(os.path.dirname(parent))
    jobs = {str(d.get("job")) for d in workflows.values() if d.get("job")}
    if len(jobs) == 1:
        return jobs.pop()
    return os.path.basename(os.path.abspath(store_path))


def _remove_stale_temps(out: str):
    d, base = os.path.split(os.path.abspath(out))
    for p in glob.glob(os.path.join(d, f".{glob.escape(base)}.tmp-*")):
        try:
            pid = int(p.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not process_alive(pid):
            try:
                os.unlink(p)
            except OSError:
                pass


def _memory_default() -> int:
    """The configured bound (a bad value fails with the ConfigError that names it)."""
    from flowcept.config import load_config
    return int(load_config().compact_memory_bytes)


class _Compaction:
    """One compaction into an open (temporary) HDF5 file."""

    def __init__(self, h5, writer: _Writer, stores: List[str], existing, report: CompactReport,
                 progress: bool, job_override: Optional[str], chunk_rows: int, memory: int,
                 spill_dir: str):
        self.h5, self.w, self.stores, self.existing = h5, writer, stores, existing
        self.report, self.progress, self.job_override = report, progress, job_override
        self.chunk_rows, self.memory, self.spill_dir = chunk_rows, memory, spill_dir
        self.strings = _Strings(existing.strings.tolist() if existing is not None else ())
        self.workflows: Dict[int, dict] = {}
        self.known_keys = set()
        self.keys_out: List[tuple] = []
        self.jobs_seen: List[str] = []

    def run(self):
        from flowcept.store import open_store_at
        # the payloads are written by a thread of their own while the rows are merged
        payloads = _Blob(self.w.sibling(), "payloads")
        existing = self.existing
        n_old = 0
        if existing is not None:
            src = existing._h5["payloads"]
            if not payloads.copy_raw_chunks(src):
                for lo in range(0, src.shape[0], 16 * BLOB_CHUNK):
                    payloads.append(src[lo:lo + 16 * BLOB_CHUNK])
            self.known_keys = {tuple(k) for k in existing._h5["batches"][()].tolist()}
            self.keys_out = list(self.known_keys)
            self.workflows = {int(k): dict(v) for k, v in existing.workflows_by_id().items()}
            n_old = len(existing)

        total_batches = expect = 0
        for sp in self.stores:
            with open_store_at(sp) as st:
                for _k, summ in st.summaries():
                    total_batches += 1
                    expect += int(summ.get("n", 0))
        refs: List[_BatchRef] = []
        self.blob_end = payloads.size
        run_rows = max(int(self.memory * _SCAN_SHARE) // _SCAN_BYTES_PER_ROW, _MIN_BLOCK)
        # a job whose rows fit in the run buffer (by the stores' summaries): one pass over
        # the stores, rows and payloads copied as each batch is read
        one_pass = _Runs(run_rows, expect, self.spill_dir) if not n_old and expect <= run_rows else None
        try:
            self._run(refs, n_old, payloads, one_pass, total_batches, open_store_at)
        finally:
            if one_pass is not None:
                one_pass.close()

    def _run(self, refs, n_old, payloads, one_pass, total_batches, open_store_at):
        existing = self.existing
        bar = _Progress(total_batches, self.progress)
        try:
            for si, sp in enumerate(self.stores):
                self._index_store(si, sp, refs, n_old, bar, open_store_at,
                                  None if one_pass is None else (one_pass, payloads))
        finally:
            bar.close()
        n_new = sum(r.m for r in refs)
        n_upper = n_old + n_new
        chunk = max(1, min(self.chunk_rows, n_upper)) if n_upper else self.chunk_rows
        g = self.h5.create_group("tasks")
        old_jobs = json.loads(existing._h5["tasks"].attrs.get("jobs", "[]")) if existing is not None else []
        g.attrs["jobs"] = json.dumps(list(dict.fromkeys(old_jobs + self.jobs_seen)))
        cols = _TaskColumns(self.w, n_upper, chunk)
        if one_pass is not None:
            payloads.close()
            dropped = self._finish_runs(one_pass, 0, cols)
        else:
            with _Reader(self.stores, open_store_at) as reader, ThreadPoolExecutor(1) as blob_thread:
                stop = threading.Event()
                blob_done = blob_thread.submit(self._write_payloads, refs, payloads, reader, stop)
                try:
                    dropped = self._merge_rows(refs, n_old, n_new, reader, cols)
                except BaseException:
                    stop.set()
                    raise
                blob_done.result()
        cols.close(self.h5)
        n = cols.n
        self.report.records = n
        self.report.new_records = n - n_old
        self.report.duplicates = dropped
        self._write_tables()

    def _write_payloads(self, refs: List["_BatchRef"], payloads: _Blob, reader: "_Reader",
                        stop: threading.Event):
        """The payload blob: each batch's payload area appended, in scan order (where the
        index pass placed it)."""
        from flowcept.native.batch import Batch
        release = _MapRelease()
        for ref, frame in reader.frames(refs, release):
            if stop.is_set():
                return
            if payloads.append(Batch(frame, check=False).payload) != ref.base:
                raise ArchiveError("a batch changed while it was being compacted")
        release.flush()
        payloads.close()

    def _merge_rows(self, refs, n_old, n_new, reader, cols) -> int:
        """The rows, sorted, into ``cols`` by the cheapest path the bound allows; returns
        how many duplicates were dropped."""
        existing = self.existing
        run_rows = max(int(self.memory * _SCAN_SHARE) // _SCAN_BYTES_PER_ROW, _MIN_BLOCK)
        chain_rows = int(self.memory * _SCAN_SHARE) // _CHAIN_BYTES_PER_ROW
        plan = None
        # chains read every store all along: only when they can all stay open
        if (n_old or n_new > run_rows) and len(self.stores) <= _MAX_OPEN_STORES:
            plan = _plan_chains(refs, chain_rows - (_archive_block(chain_rows) if n_old else 0))
        if plan is None:
            return self._merge_runs(refs, n_old, n_new, run_rows, reader, cols)
        # the stores' batches read again, chain by chain, and merged: no temporary file
        self.report.chains = len(plan)
        sources = [_ArchiveRun(existing._h5, _archive_block(chain_rows))] if n_old else []
        with ThreadPoolExecutor(1) as ahead:
            sources += [_ChainRun(c, target, reader, ahead) for c, target in plan]
            try:
                return _merge_keyed(sources, cols.append)
            finally:
                for s in sources:
                    if getattr(s, "next", None) is not None:
                        s.next.cancel()

    def _merge_runs(self, refs, n_old, n_new, run_rows, reader, cols) -> int:
        """The rows in scan order through the run buffer: one sorted run in memory when
        everything fits (no merge), else sorted runs in the temporary file merged k-way."""
        runs = _Runs(run_rows, n_new, self.spill_dir)
        try:
            for ref, frame in reader.frames(refs):
                rows = runs.reserve(ref.m)
                _fill_rows(frame, ref, rows, 0)
                runs.commit(ref.m)
            reader.release.flush()
            return self._finish_runs(runs, n_old, cols)
        finally:
            runs.close()

    def _finish_runs(self, runs: "_Runs", n_old: int, cols) -> int:
        existing = self.existing
        sources = ([_ArchiveRun(existing._h5)] if n_old else []) + runs.finish(1 if n_old else 0)
        self.report.runs = runs.spilled
        block = max(_MIN_BLOCK, int(self.memory * _MERGE_SHARE)
                    // (max(len(sources), 1) * ROW_BYTES))
        if len(sources) == 1 and isinstance(sources[0], _MemRun):
            return cols.write_gathered(sources[0])
        return _merge(sources, block, cols.append)

    def _index_store(self, si: int, sp: str, refs: List["_BatchRef"], n_old: int,
                     bar: _Progress, open_store_at, one_pass=None):
        """The index pass over one store: strings into the table, the place of each
        batch's payload area in the blob, and per batch of task records what the row pass
        needs to read it again (its key, string map, payload offset, count and start-time
        range).  Payloads are not read here, unless ``one_pass`` (run buffer, blob): then
        each batch's rows go into the run buffer and its payloads into the blob as it is read."""
        from flowcept.native.batch import Batch, unpack_batch_key
        strings, report = self.strings, self.report
        seq = n_old + sum(r.m for r in refs)
        luts: Dict[bytes, np.ndarray] = {}
        with open_store_at(sp) as st:
            store_wfs = st.workflows()
            job_name = self.job_override or _job_of_store(sp, store_wfs)
            if job_name not in self.jobs_seen:
                self.jobs_seen.append(job_name)
            job_id = strings.id(job_name)
            for wf, doc in store_wfs.items():
                self.workflows.setdefault(wf, {}).update(doc)
            # zero-copy frames: views into the store's memory map, valid until the next item;
            # their pages are let go once read, so that RSS stays within the bound
            release = _MapRelease()
            for key, frame in st.scan(zero_copy=True):
                release.next(frame, window=_READ_AHEAD)
                report.batches += 1
                k = unpack_batch_key(key)
                if k in self.known_keys:
                    report.skipped_batches += 1
                    bar.update(1, 0)
                    continue
                self.keys_out.append(k)
                b = Batch(frame, check=False)
                recs = b.records
                tasks = (recs["flags"] & FLAG_WORKFLOW) == 0
                only_tasks = bool(tasks.all())
                start = recs["start_ns"] if only_tasks else recs["start_ns"][tasks]
                m = len(start)
                if not m:
                    bar.update(1, 0)
                    continue
                names = b.strings
                node = names[0][len(NODE_PREFIX):] if names and names[0].startswith(NODE_PREFIX) else ""
                lut = np.array([strings.id(x) for x in names] + [strings.id("")], np.uint32)
                lut = luts.setdefault(lut.tobytes(), lut)     # batches of a ring share their table
                base = self.blob_end
                self.blob_end += len(b.payload)
                ref = _BatchRef(si, bytes(key), m, int(start.min()), int(start.max()), seq,
                                base, lut, strings.id(node), job_id, only_tasks)
                refs.append(ref)
                if one_pass is not None:
                    runs, payloads = one_pass
                    _fill_rows(frame, ref, runs.reserve(m), 0)
                    runs.commit(m)
                    if payloads.append(b.payload) != base:
                        raise ArchiveError("payload blob out of step with the index")
                seq += m
                bar.update(1, m)
            release.flush()

    def _write_tables(self):
        """strings, workflows, batch keys"""
        import h5py
        import msgpack
        h5 = self.h5
        h5.create_dataset("strings", data=np.array(self.strings.items, dtype=object),
                          dtype=h5py.string_dtype("utf-8"))
        wg = h5.create_group("workflows")
        ids = sorted(self.workflows)
        docs = [msgpack.packb(self.workflows[i], use_bin_type=True) for i in ids]
        lens = np.array([len(d) for d in docs], np.uint32)
        offs = np.zeros(len(ids), np.uint64)
        if len(ids) > 1:
            offs[1:] = np.cumsum(lens[:-1], dtype=np.uint64)
        wg.create_dataset("id", data=np.array(ids, np.uint64))
        wg.create_dataset("doc_off", data=offs)
        wg.create_dataset("doc_len", data=lens)
        wg.create_dataset("docs", data=np.frombuffer(b"".join(docs), np.uint8))
        self.report.workflows = len(ids)
        keys_arr = np.array(sorted(self.keys_out), np.uint64).reshape(-1, 3)
        h5.create_dataset("batches", data=keys_arr, maxshape=(None, 3),
                          chunks=(max(1, min(len(keys_arr), 4096)), 3), compression="gzip")

    def metadata(self, compression: str) -> dict:
        from flowcept import __version__
        existing, h5 = self.existing, self.h5
        meta = {
            "format": MAGIC,
            "format_version": ARCHIVE_VERSION,
            "producer": f"flowcept {__version__}",
            "flowcept_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_ns": time.time_ns(),
            "host": socket.gethostname(),
            "sources": json.dumps(sorted(set(
                (json.loads(existing.attrs.get("sources", "[]")) if existing else [])
                + [os.path.abspath(s) for s in self.stores]))),
            "record_count": self.report.records,
            "workflow_count": self.report.workflows,
            "sort_key": "start_ns",
            "index_block_rows": int(h5["index"].attrs["block_rows"]),
            "compression": compression,
            "record_dtype": json.dumps([[n, RECORD_DTYPE.fields[n][0].str]
                                        for n in RECORD_DTYPE.names]),
            "columns": json.dumps([[n, dt] for n, _f, dt in columns()]),
        }
        meta["job"] = ",".join(json.loads(h5["tasks"].attrs["jobs"]))
        return meta


def _fsync(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(path: str, out: str, *, append: bool = True, overwrite: bool = False,
            compression: str = "gzip", level: int = 1, threads: Optional[int] = None,
            progress: Optional[bool] = None, job: Optional[str] = None,
            chunk_rows: int = CHUNK_ROWS, memory_bytes: Optional[int] = None) -> CompactReport:
    """Compacts every store under ``path`` (a run, job or store directory) into ``out``.

    append        out exists: merge into it (default); records already there
                  -- same (workflow_id, task_id) -- are not added twice
    overwrite     out exists: replace it instead
    compression   "gzip" (default, level 1, readable by any HDF5), "lzf"
                  (h5py's filter) or "none"
    threads       compression threads (default: CPU count)
    progress      progress bar on stderr (default: when stderr is a TTY)
    job           job name for the records (default: from the store path)
    memory_bytes  bound on what the sort holds (default: configuration key
                  compact_memory_bytes, 256 MiB); more records than fit go
                  through sorted runs in a temporary file next to ``out``

    What a crashed job left on a node is not read here: run
    flowcept.node.recovery.recover_job first (``flowcept compact --recover``).
    """
    import h5py

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    if not 0 <= level <= 9:
        raise ValueError(f"compression level {level}: must be between 0 and 9")
    memory = _memory_default() if memory_bytes is None else int(memory_bytes)
    if memory < MIN_MEMORY:
        raise ValueError(f"memory_bytes {memory}: must be at least {MIN_MEMORY} (16 MiB)")
    from flowcept.query.tasks import find_stores
    t0 = time.perf_counter()
    out = os.fspath(out)
    report = CompactReport(output=out, memory_bytes=memory)
    stores = find_stores(path)
    report.stores = stores
    threads = threads or os.cpu_count() or 1
    if progress is None:
        progress = sys.stderr.isatty()

    existing = None
    if os.path.exists(out) and not overwrite:
        if not append:
            raise FileExistsError(f"{out} exists; pass append=True to merge into it "
                                  "(`--append`) or overwrite=True (`--overwrite`)")
        from flowcept.archive.hdf5 import Archive
        existing = Archive(out)

    out_dir = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temps(out)
    tmp = os.path.join(out_dir, f".{os.path.basename(out)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    # owner-only, like every file flowcept writes (h5py would create it 0644):
    # provenance holds arguments and values; share it with chmod on purpose
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        with h5py.File(tmp, "w") as h5:
            writer = _Writer(h5, compression, level, threads)
            try:
                job_run = _Compaction(h5, writer, stores, existing, report, progress, job,
                                      chunk_rows, memory, out_dir)
                job_run.run()
                writer.flush()
                for k, v in job_run.metadata(compression).items():
                    h5.attrs[k] = v
            finally:
                writer.close()
        if existing is not None:
            existing.close()
            existing = None
        _fsync(tmp)
        os.replace(tmp, out)
        _fsync(out_dir)
    except BaseException:
        if existing is not None:
            existing.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    report.seconds = time.perf_counter() - t0
    report.bytes = os.path.getsize(out)
    return report
