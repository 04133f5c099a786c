"""Sorting the rows by start time in bounded memory, and dropping duplicates on the way.

Every row has a place in the scan order, ``seq`` (the archive merged into first, then the
stores' rows as the index pass met them); the archive's order is (start_ns, seq).  Sources of
blocks sorted by (start_ns, seq) -- sorted runs in a temporary file, the archive being merged
into, chains of batches read from the stores (flowcept.archive.scan) -- are merged k-way a
block of each at a time, in C (flowcept.native.columns): each round merges the heads of the
blocks up to the least last row of the sources still being read, and hands the merged order
(no rows are copied) to the writer, which gathers each chunk of each column from it.
Duplicates by (workflow_id, task_id) are dropped as they meet (a task's records share its
start time; a finished record is kept over a RUNNING one, else the first).  When everything
fits in memory there is no merge: one sort of the scan buffer (``dedupe_run``).
"""
from __future__ import annotations

import bisect
import os
import tempfile
from typing import Callable, List, Optional, Tuple

import numpy as np

from flowcept.archive import ArchiveError
from flowcept.archive.format import COLS, NAMES, SEQ, Block, Parts
from flowcept.record.layout import STATUS_RUNNING

_SPILL_ROWS = 1 << 16         # rows per write of a sorted run


def _columns():
    from flowcept.native import columns
    return columns


class MemRun:
    """The only run, held in memory (everything fitted): the scan buffer and its sort order
    (None: already in order)."""

    def __init__(self, rows: Block, order: Optional[np.ndarray]):
        self.rows, self.order, self.n = rows, order, len(rows)


def _pread_into(fd: int, arr: np.ndarray, offset: int):
    view = memoryview(arr.view(np.uint8))
    got = 0
    while got < len(view):
        k = os.preadv(fd, [view[got:]], offset + got)
        if k <= 0:
            raise ArchiveError("the temporary run file of the compaction was truncated")
        got += k


class FileRun:
    """A sorted run in the temporary file: ``count`` rows, each column (and seq) contiguous
    from its byte offset, read a block at a time."""

    def __init__(self, fd: int, offsets: dict, count: int, block_rows: int = 0):
        self.fd, self.offsets, self.count, self.pos = fd, offsets, count, 0
        self.block_rows = block_rows

    def read_block(self) -> Block:
        hi = min(self.pos + self.block_rows, self.count)
        out = Block.empty(hi - self.pos, seq=True)
        for name, arr in out.cols.items():
            _pread_into(self.fd, arr, self.offsets[name] + self.pos * arr.dtype.itemsize)
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.count


class ArchiveRun:
    """The rows of the archive being merged into (already sorted; seq: their positions),
    read a block at a time."""

    def __init__(self, h5, block_rows: int = 0):
        self.ds = [(name, h5[f"tasks/{name}"]) for name, _dt in COLS]
        self.n = self.ds[0][1].shape[0]
        self.pos = 0
        self.block_rows = block_rows

    def read_block(self) -> Block:
        lo, hi = self.pos, min(self.pos + self.block_rows, self.n)
        out = Block.empty(hi - lo, seq=True)
        if hi > lo:
            for name, ds in self.ds:
                ds.read_direct(out.cols[name], np.s_[lo:hi])
        out.cols[SEQ[0]][:] = np.arange(lo, hi, dtype=np.int64)
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n


class Runs:
    """Collects scanned rows (in scan order; row i has seq ``seq0 + i``) into sorted runs
    within a memory bound: a run is written to an anonymous temporary file when the buffer
    is full.  ``decoder(block)`` makes what writes a batch's rows into a block
    (``.fill(frame, ref, at)``, flowcept.archive.scan.RowDecoder)."""

    def __init__(self, capacity_rows: int, expect: int, spill_dir: str, seq0: int,
                 decoder: Callable):
        self.cap = capacity_rows
        self.buf = Block.empty(max(min(self.cap, expect), 1))
        self.n = 0
        self.seq0 = seq0
        self.spill_dir = spill_dir
        self.decoder = decoder
        self.dec = None
        self.file = None
        self.size = 0
        self.runs: List[object] = []
        self.spilled = 0

    def add(self, frame, ref) -> None:
        """A batch's ``ref.m`` rows, at the end of the buffer (after spilling a full run)."""
        m = ref.m
        if self.n + m > len(self.buf):
            if self.n + m > self.cap and self.n:
                self._spill()
            if self.n + m > len(self.buf):
                grown = Block.empty(max(self.n + m, min(2 * len(self.buf), self.cap)))
                for name, c in grown.cols.items():
                    c[:self.n] = self.buf.cols[name][:self.n]
                self.buf = grown
        if self.dec is None or self.dec.block is not self.buf:
            self.dec = self.decoder(self.buf)
        if self.dec.fill(frame, ref, self.n) != m:
            raise ArchiveError("a batch changed while it was being compacted")
        self.n += m

    def _sorted(self) -> Tuple[Block, Optional[np.ndarray]]:
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
        for name in NAMES:
            offsets[name] = self.size
            for lo in range(0, self.n, _SPILL_ROWS):
                hi = min(lo + _SPILL_ROWS, self.n)
                if name == SEQ[0]:
                    pos = np.arange(lo, hi) if order is None else order[lo:hi]
                    self._write(pos.astype(np.int64) + self.seq0)
                else:
                    col = rows[name]
                    self._write(col[lo:hi] if order is None else np.take(col, order[lo:hi]))
        self.runs.append(FileRun(self.file.fileno(), offsets, self.n))
        self.spilled += 1
        self.seq0 += self.n
        self.n = 0

    def finish(self, others: int) -> List[object]:
        """The runs, in scan order.  The last one stays in memory when it is the only
        source (``others``: sources besides the runs): a MemRun, written without a merge;
        else it is written out too, so that the merge holds only its blocks."""
        if self.n:
            if self.runs or others:
                self._spill()
            else:
                rows, order = self._sorted()
                self.runs.append(MemRun(rows, order))
                self.n = 0
        self.buf = self.dec = None
        return self.runs

    def close(self):
        self.buf = self.dec = None
        if self.file is not None:
            self.file.close()
            self.file = None


def _drop_duplicates(parts: Parts, order: np.ndarray, keys: np.ndarray) -> int:
    """Duplicates dropped from a merged order (in place); returns the rows left."""
    return _columns().drop_duplicates_at(
        order, keys, parts.lens, parts.column("workflow_id"), parts.column("task_id"),
        parts.column("status"), STATUS_RUNNING)


def dedupe_run(run: MemRun) -> Tuple[Parts, np.ndarray, np.ndarray, int]:
    """The only run (everything fitted in memory) in order without its duplicates: (its
    rows as one part, the merged order, the start times in that order, how many dropped)."""
    rows = run.rows
    # the permutation as a merged order of one part (its positions are the rows), and the
    # start times in that order: both new arrays, compacted in place by the duplicate rule
    order = (np.arange(run.n, dtype=np.uint64) if run.order is None
             else run.order.view(np.uint64))
    keys = rows["start_ns"].copy() if run.order is None else np.take(rows["start_ns"], run.order)
    parts = Parts([rows])
    left = _drop_duplicates(parts, order, keys)
    return parts, order[:left], keys[:left], run.n - left


def gather_block(parts: Parts, order: np.ndarray) -> Block:
    """The rows an order names, copied into a new block (with seq)."""
    nc = _columns()
    n = len(order)
    out = Block.empty(n, seq=True)
    piece = np.zeros(1, nc.PIECE_DTYPE)
    piece["lens"], piece["order"] = parts.lens_addr, order.__array_interface__["data"][0]
    piece["n"], piece["nparts"] = n, parts.k
    cols = np.zeros(len(NAMES), nc.COLUMN_DTYPE)
    cols["bases"] = parts.base + np.arange(len(NAMES), dtype=np.uint64) * np.uint64(parts.k * 8)
    cols["out"] = out.addr
    cols["itemsize"] = [out.cols[name].dtype.itemsize for name in NAMES]
    nc.gather_at(piece, cols, n)
    return out


def _cut(b: Block, bs: int, bq: int) -> int:
    """How many rows of a block sort at or before (bs, bq)."""
    st = b["start_ns"]
    c = int(np.searchsorted(st, bs, "left"))
    e = int(np.searchsorted(st, bs, "right"))
    if e > c:
        c += int(np.searchsorted(b[SEQ[0]][c:e], bq, "right"))
    return c


def merge(sources: List[object], emit: Callable[[Parts, np.ndarray, np.ndarray], None]) -> int:
    """Merges sources of blocks sorted by (start_ns, seq) into ``emit(parts, order, keys)``
    (rows in the archive's order: the stable sort of all rows by start_ns in scan order),
    dropping duplicates; returns how many.  Each source holds two blocks; a round merges
    every held row up to the least last held row of the sources still being read (their
    unread rows sort after it), so that a round takes about a block of every source."""
    nc = _columns()
    seq = SEQ[0]
    held: List[List[Block]] = [[] for _ in sources]
    carry: Optional[Block] = None
    dropped = 0
    while True:
        for i, s in enumerate(sources):
            while len(held[i]) < 2 and not s.exhausted:
                b = s.read_block()
                if len(b):
                    held[i].append(b)
        live = [i for i in range(len(sources)) if held[i]]
        if not live and carry is None:
            break
        pending = [i for i in live if not sources[i].exhausted]
        heads = [] if carry is None else [carry]
        if pending:
            bs, bq = min((int(held[i][-1]["start_ns"][-1]), int(held[i][-1][seq][-1]))
                         for i in pending)
            for i in live:
                rest: List[Block] = []
                for j, b in enumerate(held[i]):
                    c = _cut(b, bs, bq)
                    if c:
                        heads.append(b.slice(0, c))
                    if c < len(b):
                        rest = [b.slice(c, len(b))] + held[i][j + 1:]
                        break
                held[i] = rest
        else:
            for i in live:
                heads.extend(held[i])
                held[i] = []
        parts = Parts(heads)
        order, keys = nc.merge_order_at(parts.column("start_ns"), parts.column(seq), parts.lens)
        n = _drop_duplicates(parts, order, keys)
        dropped += len(order) - n
        cut = n
        if pending and n:
            # rows of the last start time may have duplicates still unread: keep them back
            cut = int(np.searchsorted(keys[:n], keys[n - 1], "left"))
        carry = gather_block(parts, order[cut:n]) if cut < n else None
        if cut:
            emit(parts, order[:cut], keys[:cut])
    return dropped


def plan_chains(refs: list, budget_rows: int, max_chains: int):
    """Batches (in scan order) grouped into chains, each a sequence whose start times never
    go down from one batch to the next (a ring's batches, nearly always): each chain is a
    sorted run without being sorted as a whole, so the merge can read the store directly.
    A batch joins the chain whose last start is the latest at or before its first start.
    Returns [(chain, block rows)], or None when one block per chain would not fit in
    ``budget_rows`` or there would be more than ``max_chains`` (then the rows go through
    sorted runs in the temporary file)."""
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
            if len(chains) > max_chains:
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
