"""Lineage on columns: which tasks a task depends on, and which depend on it.

The rule is ``flowcept.archive.lineage``'s: a parent link (parent_task_id),
or a data dependency -- task B depends on task A when a value B used equals
a value A generated and A ended no later than B started.  Only scalars take
part (``scalar_values``).  ``LineageIndex`` holds the links of a whole table
as arrays: parent rows, and each row's used and generated values as integer
keys (C writes a 128-bit key per msgpack scalar, equal exactly where the
values are equal; rows C leaves are keyed from Python's values).  A walk
goes level by level with numpy; per value it admits only the producers
(consumers) not admitted yet, so a popular value costs once, not once per
task that uses it.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import msgpack
import numpy as np

from flowcept.query.documents import _native_json, _rows_for_c, payload_documents
from flowcept.query.limits import UNBOUNDED, Budget


def scalar_values(d) -> List:
    """The values of a used/generated dict that take part in data dependencies."""
    out = []
    if not isinstance(d, dict):
        return out
    for v in d.values():
        items = v if isinstance(v, (list, tuple)) else (v,)
        for x in items:
            if isinstance(x, bool) or x is None:
                continue
            if isinstance(x, float) and math.isnan(x):
                continue
            if isinstance(x, (str, bytes, int, float)):
                out.append(x)
    return out


def find_rows(wf_col: np.ndarray, id_col: np.ndarray, wf: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each (wf, id) pair in the (wf_col, id_col) table, -1 where absent."""
    order = np.lexsort((id_col, wf_col))
    swf, sid = wf_col[order], id_col[order]
    out = np.full(len(ids), -1, np.int64)
    for w in np.unique(wf).tolist():
        lo, hi = np.searchsorted(swf, w, "left"), np.searchsorted(swf, w, "right")
        if lo == hi:
            continue
        sel = np.flatnonzero(wf == w)
        pos = lo + np.searchsorted(sid[lo:hi], ids[sel])
        ok = pos < hi
        ok[ok] = sid[pos[ok]] == ids[sel][ok]
        out[sel[ok]] = order[pos[ok]]
    return out


def value_keys(block, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys (m, 2) uint64, row of each (an index into ``rows``), kind of each:
    0 used, 1 generated) of the values rows of a block link by."""
    native = _native_json()
    rows = np.asarray(rows, np.int64)
    if native is None:   # pragma: no cover - a pure-Python install: no keys, no data links
        return np.zeros((0, 2), np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    r = _rows_for_c(native, {0: block}, np.zeros(len(rows), np.int64), rows, "orjson", True)
    keys, row_of, kind, left = native.scalars(r)
    if not len(left):
        return keys, row_of, kind
    extra_k, extra_r, extra_t = [], [], []
    for i, d in zip(left.tolist(), payload_documents(block, rows[left])):
        for t, f in ((0, "used"), (1, "generated")):
            for v in scalar_values(d.get(f) if isinstance(d, dict) else None):
                k = native.scalar_key(msgpack.packb(v, use_bin_type=True))
                if k is not None:
                    extra_k.append(k)
                    extra_r.append(i)
                    extra_t.append(t)
    if not extra_k:
        return keys, row_of, kind
    return (np.concatenate([keys, np.array(extra_k, np.uint64).reshape(-1, 2)]),
            np.concatenate([row_of, np.array(extra_r, np.int64)]),
            np.concatenate([kind, np.array(extra_t, np.uint8)]))


class _Side:
    """One direction of the data links: for each value, the rows at its far
    end sorted by the time that admits them (producers by end, consumers by
    -start), as one array searchable by (value, time)."""

    def __init__(self, vid: np.ndarray, row: np.ndarray, t: np.ndarray, nvalues: int):
        self.times = np.sort(t)
        rank = np.searchsorted(self.times, t, "right")          # 1.. : how many times <= t
        self.width = len(self.times) + 1
        comp = vid.astype(np.int64) * self.width + rank
        order = np.argsort(comp, kind="stable")
        self.comp, self.row = comp[order], row[order]
        self.nvalues = nvalues

    def admit(self, vid: np.ndarray, limit: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Rows of values ``vid`` whose time is at most ``limit`` (per pair),
        not admitted before in this walk (``done``: the time rank admitted so
        far per value, -1 none; updated)."""
        if not len(vid):
            return np.zeros(0, np.int64)
        rank = np.searchsorted(self.times, limit, "right")
        order = np.lexsort((rank, vid))                        # per value, its largest rank last
        last = np.ones(len(order), bool)
        last[:-1] = vid[order][1:] != vid[order][:-1]
        vals, best = vid[order][last], rank[order][last]
        more = best > done[vals]
        vals, best = vals[more], best[more]
        if not len(vals):
            return np.zeros(0, np.int64)
        lo_rank = np.maximum(done[vals], 0)
        done[vals] = best
        base = vals.astype(np.int64) * self.width
        lo = np.searchsorted(self.comp, base + lo_rank, "right")
        hi = np.searchsorted(self.comp, base + best, "right")
        n = hi - lo
        if not n.sum():
            return np.zeros(0, np.int64)
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return self.row[starts + np.arange(int(n.sum()))]


def _csr(owner: np.ndarray, value: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    order = np.argsort(owner, kind="stable")
    return np.searchsorted(owner[order], np.arange(n + 1)), value[order]


class LineageIndex:
    """The parent and data links of every task of a table (``engine.Table``);
    rows are numbered in the order of ``table.refs()`` then of each block.
    ``budget.check()`` is called once per block read (a query's budget, or a
    background build's progress count)."""

    def __init__(self, table, budget: Budget = UNBOUNDED):
        self.refs = table.refs(None)
        wf, tid, pid, start, end = [], [], [], [], []
        keys, key_row, key_kind = [], [], []
        self.first = np.zeros(len(self.refs) + 1, np.int64)
        at = 0
        for i, (_ref, block) in enumerate(table.blocks(self.refs)):
            budget.check()
            c = block.cols
            wf.append(c["workflow_id"])
            tid.append(c["task_id"])
            pid.append(c["parent_id"])
            start.append(c["start_ns"].astype(np.int64))
            end.append(c["end_ns"].astype(np.int64))
            k, r, t = value_keys(block, np.arange(block.n))
            keys.append(k)
            key_row.append(r + at)
            key_kind.append(t)
            at += block.n
            self.first[i + 1] = at
        self.n = n = at
        cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt))
        self.wf, self.tid = cat(wf, np.uint64), cat(tid, np.uint64)
        pid_all = cat(pid, np.uint64)
        self.start, self.end = cat(start, np.int64), cat(end, np.int64)
        self.parent = np.full(n, -1, np.int64)
        has = pid_all != 0
        self.parent[has] = find_rows(self.wf, self.tid, self.wf[has], pid_all[has])
        kids = np.flatnonzero(self.parent >= 0)
        self.child_ptr, self.child_rows = _csr(self.parent[kids], kids, n)
        k = cat(keys, np.uint64).reshape(-1, 2)
        rows, kind = cat(key_row, np.int64), cat(key_kind, np.uint8)
        vid, nv = _value_ids(k)
        used, gen = kind == 0, kind == 1
        self.used_ptr, self.used_vid = _csr(rows[used], vid[used], n)
        self.gen_ptr, self.gen_vid = _csr(rows[gen], vid[gen], n)
        self._producers = _Side(vid[gen], rows[gen], self.end[rows[gen]], nv)
        self._consumers = _Side(vid[used], rows[used], -self.start[rows[used]], nv)

    def row_of(self, task_id: str) -> int:
        """The row of a task id ("<workflow hex>-<task hex>"); KeyError when absent."""
        try:
            w, t = task_id.split("-")
            key = (np.array([int(w, 16)], np.uint64), np.array([int(t, 16)], np.uint64))
        except ValueError:
            raise KeyError(task_id) from None
        r = int(find_rows(self.wf, self.tid, *key)[0])
        if r < 0:
            raise KeyError(task_id)
        return r

    def walk(self, start: int, up: bool, budget: Budget = UNBOUNDED, parents: bool = True,
             data: bool = True) -> np.ndarray:
        """Rows of the ancestors (up) or descendants of row ``start``, sorted, by
        parent links and/or data links (walks may run at once: a walk's state is
        its own)."""
        side = self._producers if up else self._consumers
        done = np.full(side.nvalues, -1, np.int64)
        seen = np.zeros(self.n, bool)
        seen[start] = True
        frontier = np.array([start], np.int64)
        while len(frontier):
            budget.check()
            nxt = [np.zeros(0, np.int64)]
            if up:
                if parents:
                    p = self.parent[frontier]
                    nxt.append(p[p >= 0])
                ptr, vids, limit = self.used_ptr, self.used_vid, self.start
            else:
                if parents:
                    nxt.append(_gather(self.child_ptr, self.child_rows, frontier))
                ptr, vids, limit = self.gen_ptr, self.gen_vid, -self.end
            if data:
                owners = np.repeat(frontier, ptr[frontier + 1] - ptr[frontier])
                nxt.append(side.admit(_gather(ptr, vids, frontier), limit[owners], done))
            cand = np.unique(np.concatenate(nxt))
            frontier = cand[~seen[cand]]
            seen[frontier] = True
        seen[start] = False
        return np.flatnonzero(seen)

    def locate(self, rows: np.ndarray) -> List[Tuple[int, np.ndarray]]:
        """(ref index, rows within its block) of table rows, block by block."""
        b = np.searchsorted(self.first, rows, "right") - 1
        return [(int(i), rows[b == i] - self.first[i]) for i in np.unique(b).tolist()]


def _value_ids(keys: np.ndarray) -> Tuple[np.ndarray, int]:
    """(a number per distinct 128-bit key, for each key; how many distinct)."""
    m = len(keys)
    if not m:
        return np.zeros(0, np.int64), 0
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    a, b = keys[order, 0], keys[order, 1]
    new = np.ones(m, bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    vid = np.empty(m, np.int64)
    vid[order] = np.cumsum(new) - 1
    return vid, int(new.sum())


def _gather(ptr: np.ndarray, values: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """values[ptr[o]:ptr[o+1]] of each owner, one after the other."""
    lo, hi = ptr[owners], ptr[owners + 1]
    n = hi - lo
    total = int(n.sum())
    if not total:
        return np.zeros(0, values.dtype)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
    return values[starts + np.arange(total)]


__all__ = ["scalar_values", "find_rows", "value_keys", "LineageIndex"]
