"""Sorting the rows by start time in bounded memory, and dropping duplicates on the way.

Sources of rows sorted by start_ns (ties in scan order): the one run in memory, sorted runs
in a temporary file, the archive being merged into, chains of batches read from the stores
(flowcept.archive.scan).  They are merged k-way a block of each at a time.  Duplicates by
(workflow_id, task_id) are dropped as they meet (a task's records share its start time; a
finished record is kept over a RUNNING one, else the first).
"""
from __future__ import annotations

import bisect
import os
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from flowcept.archive import ArchiveError
from flowcept.archive.format import CHUNK_ROWS, COLS, Block
from flowcept.record.layout import STATUS_RUNNING


class MemRun:
    """The only run, held in memory (everything fitted): the scan buffer and its sort
    order, gathered a block at a time (no sorted copy of the whole)."""

    def __init__(self, rows: Block, order: Optional[np.ndarray]):
        self.rows, self.order, self.pos, self.n = rows, order, 0, len(rows)

    def read(self, n: int) -> Block:
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


class FileRun:
    """A sorted run in the temporary file: ``count`` rows, each column contiguous from
    its byte offset."""

    def __init__(self, fd: int, offsets: Dict[str, int], count: int):
        self.fd, self.offsets, self.count, self.pos = fd, offsets, count, 0

    def read(self, n: int) -> Block:
        hi = min(self.pos + n, self.count)
        out = Block.empty(hi - self.pos)
        for name, dt in COLS:
            _pread_into(self.fd, out.cols[name], self.offsets[name] + self.pos * dt.itemsize)
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.count


class ArchiveRun:
    """The rows of the archive being merged into (already sorted), read block by block."""

    def __init__(self, h5, block_rows: int = 0):
        self.ds = [(name, h5[f"tasks/{name}"]) for name, _dt in COLS]
        self.n = self.ds[0][1].shape[0]
        self.pos = 0
        self.block_rows = block_rows

    def read_block(self) -> Block:
        """The next block, with the rows' positions (they come first in the scan order)."""
        lo = self.pos
        out = self.read(self.block_rows)
        out.cols["seq"] = np.arange(lo, self.pos, dtype=np.int64)
        return out

    def read(self, n: int) -> Block:
        hi = min(self.pos + n, self.n)
        out = Block({name: ds[self.pos:hi] for name, ds in self.ds})
        self.pos = hi
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n


class Runs:
    """Collects scanned rows into sorted runs within a memory bound."""

    def __init__(self, capacity_rows: int, expect: int, spill_dir: str):
        self.cap = capacity_rows
        self.buf = Block.empty(max(min(self.cap, expect), 1))
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
                grown = Block.empty(max(self.n + m, min(2 * len(self.buf), self.cap)))
                for name, c in grown.cols.items():
                    c[:self.n] = self.buf.cols[name][:self.n]
                self.buf = grown
        return {k: v[self.n:self.n + m] for k, v in self.buf.cols.items()}

    def commit(self, m: int):
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
        step = CHUNK_ROWS
        for name, _dt in COLS:
            offsets[name] = self.size
            col = rows[name]
            for lo in range(0, self.n, step):
                hi = min(lo + step, self.n)
                self._write(col[lo:hi] if order is None else np.take(col, order[lo:hi]))
        self.runs.append(FileRun(self.file.fileno(), offsets, self.n))
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
                self.runs.append(MemRun(rows, order))
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


def dedupe_run(run: MemRun) -> Tuple[Optional[np.ndarray], np.ndarray, int]:
    """The only run (everything fitted in memory) without its duplicates: (positions of its
    rows in order, None: as they are; their start times in that order; how many dropped)."""
    rows, order = run.rows, run.order
    start = rows["start_ns"]
    s = start if order is None else np.take(start, order)
    pick = (lambda name, pos: rows[name][pos]) if order is None else \
        (lambda name, pos: rows[name][order[pos]])
    drop = _duplicates(s, pick)
    if drop is None:
        return order, s, 0
    keep = np.ones(len(s), bool)
    keep[drop] = False
    keep_pos = np.flatnonzero(keep)
    order = keep_pos if order is None else order[keep_pos]
    return order, s[keep_pos], len(drop)


def dedupe_sorted(rows: Block) -> Tuple[Block, int]:
    """rows without their duplicates (see _duplicates), and how many were dropped."""
    drop = _duplicates(rows["start_ns"], lambda name, pos: rows[name][pos])
    if drop is None:
        return rows, 0
    keep = np.ones(len(rows), bool)
    keep[drop] = False
    return rows.take(np.flatnonzero(keep)), len(drop)


def merge(runs: List[object], block_rows: int, emit: Callable[[Block], None]) -> int:
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
        merged = parts[0] if len(parts) == 1 else Block.concat(parts)
        s = merged["start_ns"]
        if len(parts) > 1 and not np.all(s[1:] >= s[:-1]):
            merged = merged.take(np.argsort(s, kind="stable"))
        merged, d = dedupe_sorted(merged)
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


def _keyed_concat(parts: List[Block]) -> Block:
    return Block({name: np.concatenate([p.cols[name] for p in parts]) for name in parts[0].cols})


def _in_order(parts: List[Block]) -> bool:
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


def merge_keyed(sources: List[object], emit: Callable[..., None]) -> int:
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
