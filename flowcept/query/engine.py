"""The query engine: Mongo-style filters evaluated on columns, in blocks.

A :class:`Table` is a column provider per kind of store: it lists its
blocks with a summary each (``refs``; the batch summaries of a store, the
per-block index of an archive) and loads them as
:class:`flowcept.query.frames.Block`.  On every block the one filter
engine (``flowcept.query.filters.mask``) runs over :class:`BlockColumns`,
which answers every fixed field of a task document exactly with numpy and
hands payload fields (``used.*``, ``generated.*``, ``tags``, ...) to the
documents of the rows still in question.  Documents are built
(``flowcept.query.documents``) only for the rows that survive, only with
the fields asked for.

On top of that, the questions every way in asks:

* :func:`matching` -- (ref, block, rows) of the matches, block by block;
* :func:`count`;
* :func:`page` -- one sorted page (top k by columns, resuming after a
  cursor's key; blocks whose summary cannot beat the page are not read);
* :func:`stream` -- every match in order, without holding the answer;
* :func:`group_stats`, :func:`summarize` -- statistics on columns.

A batch id found in several stores of one table is read once
(:class:`StoreTable`).  Every loop checks the query's
:class:`flowcept.query.limits.Budget`.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from flowcept.query.documents import (documents, dumps, dumps_python, json_text, payload_documents, project,
                                      sort_docs, sort_key)
from flowcept.query.filters import MISSING, Columns, as_list, get_path, is_number, mask, match_value
from flowcept.query.frames import Block, decode_frame
from flowcept.query.limits import UNBOUNDED, Budget
from flowcept.query.prune import batch_may_match
from flowcept.record.document import FIXED_FIELDS, PAYLOAD_ROOTS, status_name
from flowcept.record.layout import STATUS_ERROR

_INT_FIELDS = {"rank": "rank", "thread_id": "thread_id", "start_ns": "start_ns", "end_ns": "end_ns"}
_SEC_FIELDS = {"started_at": "start_ns", "ended_at": "end_ns"}
_CODE_FIELDS = {"activity_id": "activity", "hostname": "node"}
_CANONICAL_ID = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")
_I64 = (-(1 << 63), (1 << 63) - 1)


# -- tables ------------------------------------------------------------------------------------
class Ref:
    """One block of a table, before it is read: ``id`` (what the table
    loads it by), ``n`` rows (at most) and ``summary`` (the index entry:
    t0/s1 the smallest/largest start_ns, e0/t1 the smallest/largest end_ns,
    r0/r1 ranks, ...; missing keys mean unknown)."""

    __slots__ = ("id", "n", "summary")

    def __init__(self, id, n: int, summary: dict):
        self.id = id
        self.n = n
        self.summary = summary


class Table:
    """A column provider: task rows in blocks.  Subclasses fill in ``refs``
    and ``blocks``; ``close`` releases what they hold."""

    def refs(self, cond: Optional[dict] = None) -> List[Ref]:
        """The blocks that may hold a match of ``cond`` (all for None), in a
        stable order."""
        raise NotImplementedError

    def blocks(self, refs: Sequence[Ref]) -> Iterator[Tuple[Ref, Block]]:
        """(ref, Block) of the given refs, in their order."""
        raise NotImplementedError

    def generation(self):
        """A value that changes when the table's contents change (for caches)."""
        return None

    @property
    def values(self) -> ValueCache:
        """The table's cache of payload values filters looked at."""
        v = self.__dict__.get("_values")
        if v is None:
            v = self.__dict__["_values"] = ValueCache()
        return v

    def close(self) -> None:
        pass


class StoreTable(Table):
    """The batches of one or more stores (``flowcept.store.Store`` objects,
    kept open; read transactions are per query, so queries run side by side
    without a lock).  A batch id found in more than one store (a keeper
    killed after its commit and replaced by one writing elsewhere) is one
    block: the first store's."""

    def __init__(self, stores: Sequence):
        import threading
        from collections import OrderedDict
        self.stores = list(stores)
        self._block_lock = threading.Lock()
        self._blocks: "OrderedDict[tuple, tuple]" = OrderedDict()
        self._blocks_held = 0

    def refs(self, cond: Optional[dict] = None) -> List[Ref]:
        out: List[Ref] = []
        seen = set()
        for si, store in enumerate(self.stores):
            for key, summary in store.summaries():
                key = bytes(key)
                if key in seen:
                    continue
                seen.add(key)
                if not summary.get("n", 0):
                    continue
                if cond and not batch_may_match(summary, cond):
                    continue
                out.append(Ref((si, key), int(summary["n"]), summary))
        return out

    def blocks(self, refs: Sequence[Ref], window: int = 16) -> Iterator[Tuple[Ref, Block]]:
        """Batches are read a few at a time (``window``) from their store and
        handed out in the refs' order; decoded batches are kept in a small
        cache (``cache_bytes``, least recently used out): a stored batch never
        changes, and the first pages of a served store read the same ones."""
        i = 0
        while i < len(refs):
            si = refs[i].id[0]
            j = i
            while j < len(refs) and j - i < window and refs[j].id[0] == si:
                j += 1
            got = {}
            want = {}
            for x in range(i, j):
                b = self._cached(refs[x].id)
                if b is not None:
                    got[x] = b
                else:
                    want[refs[x].id[1]] = x
            if want:
                for key, frame in self.stores[si].scan(keys=list(want)):
                    x = want.get(bytes(key))
                    if x is not None:
                        got[x] = self._keep(refs[x].id, decode_frame(frame, bytes(key)), len(frame))
            for x in range(i, j):
                if x in got:   # (a batch gone since its summary was read is skipped)
                    yield refs[x], got[x]
            i = j

    cache_bytes = 256 << 20

    def _cached(self, rid):
        with self._block_lock:
            hit = self._blocks.get(rid)
            if hit is not None:
                self._blocks.move_to_end(rid)
                return hit[0]
        return None

    def _keep(self, rid, block: Block, size: int) -> Block:
        if size > self.cache_bytes // 4:
            return block
        with self._block_lock:
            cache = self._blocks
            if rid not in cache:
                cache[rid] = (block, size)
                self._blocks_held += size
                while self._blocks_held > self.cache_bytes:
                    _k, (_b, sz) = cache.popitem(last=False)
                    self._blocks_held -= sz
        return block

    def generation(self):
        return tuple(len(list(s.summaries())) for s in self.stores)

    def close(self) -> None:
        for s in self.stores:
            s.close()
        self.stores = []
        with self._block_lock:
            self._blocks.clear()
            self._blocks_held = 0


# -- filters on a block's columns ----------------------------------------------------------
def _num_cmp(col: np.ndarray, op: str, arg) -> np.ndarray:
    """``col op arg`` exactly as Python compares the document's values (an
    int column against a float compares exactly, not through float64)."""
    n = len(col)
    if col.dtype.kind in "iu":
        if isinstance(arg, float):
            if math.isnan(arg):
                return np.zeros(n, bool)
            if math.isinf(arg):
                big = arg > 0
                return np.full(n, (op in ("$lt", "$lte")) if big else (op in ("$gt", "$gte")))
            if arg.is_integer():
                arg = int(arg)
            else:
                fl = math.floor(arg)
                if op == "$eq":
                    return np.zeros(n, bool)
                if op in ("$gt", "$gte"):
                    return _num_cmp(col, "$gt", fl)
                return _num_cmp(col, "$lte", fl)
        if arg > _I64[1] or arg < _I64[0]:
            above = arg > 0
            if op == "$eq":
                return np.zeros(n, bool)
            return np.full(n, (op in ("$lt", "$lte")) if above else (op in ("$gt", "$gte")))
        # (numpy compares an int column with any Python int in int64 range exactly)
    else:
        try:
            arg = float(arg)
        except OverflowError:
            return _num_cmp(col, op, math.inf if arg > 0 else -math.inf)
    if op == "$eq":
        return col == arg
    if op == "$gt":
        return col > arg
    if op == "$gte":
        return col >= arg
    if op == "$lt":
        return col < arg
    return col <= arg


def _num_mask(col: np.ndarray, op: str, arg) -> np.ndarray:
    """One operator on a numeric field (document values are numbers)."""
    n = len(col)
    if op == "$exists":
        return np.full(n, bool(arg))
    if op == "$regex":
        return np.zeros(n, bool)
    if op in ("$ne", "$nin"):
        return ~_num_mask(col, "$eq" if op == "$ne" else "$in", arg)
    if op == "$in":
        vals = [a for a in as_list(arg, op) if is_number(a)]
        m = np.zeros(n, bool)
        if len(vals) > 16 and col.dtype.kind in "iu":
            ints = [int(a) for a in vals if (not isinstance(a, float) or a.is_integer())
                    and _I64[0] <= a <= _I64[1]]
            return np.isin(col.astype(np.int64, copy=False), np.array(ints, np.int64))
        for a in vals:
            m |= _num_cmp(col, "$eq", a)
        return m
    if not is_number(arg):
        return np.zeros(n, bool)
    return _num_cmp(col, op, arg)


class BlockColumns(Columns):
    """A block's columns for the filter engine, with the meaning of each
    field in a task document: exact answers for every fixed field, None
    (the documents decide) for payload fields."""

    def __init__(self, block: Block, budget: Budget = UNBOUNDED, values: Optional[ValueCache] = None):
        self.block = block
        self.budget = budget
        self.values = values if block.key is not None else None
        self._docs: Dict[int, dict] = {}
        self._memo: Dict[tuple, bool] = {}
        self._cols: Dict[str, np.ndarray] = {}

    def cost(self, field: str) -> int:
        return 1 if field.split(".", 1)[0] in PAYLOAD_ROOTS else 0

    def seconds(self, name: str) -> np.ndarray:
        key = name + "/1e9"
        c = self._cols.get(key)
        if c is None:
            c = self._cols[key] = self.block.cols[name].astype(np.float64) / 1e9
        return c

    def field_mask(self, field, op, arg, rows):
        root = field.split(".", 1)[0]
        n = len(rows)
        if root in PAYLOAD_ROOTS:
            return _values_mask(self._payload_values(field, rows), op, arg)
        if "." in field or root not in FIXED_FIELDS:
            return np.full(n, match_value(MISSING, op, arg))
        c = self.block.cols
        every = n == self.block.n    # rows are increasing: all of them, no gather needed

        def col(name):
            return c[name] if every else c[name][rows]
        if field in _INT_FIELDS:
            return _num_mask(col(_INT_FIELDS[field]), op, arg)
        if field in _SEC_FIELDS:
            s = self.seconds(_SEC_FIELDS[field])
            return _num_mask(s if every else s[rows], op, arg)
        if field in _CODE_FIELDS:
            return self._distinct(field, col(_CODE_FIELDS[field]), self._string, op, arg)
        if field == "status":
            return self._distinct(field, col("status"), status_name, op, arg)
        if field == "workflow_id":
            return self._distinct(field, col("workflow_id"), lambda w: f"{int(w):016x}", op, arg)
        if field == "task_id":
            return self._id_mask(col("workflow_id"), col("task_id"), op, arg, False)
        return self._id_mask(col("workflow_id"), col("parent_id"), op, arg, True)

    def _string(self, code) -> str:
        s = self.block.strings
        code = int(code)
        return s[code] if code < len(s) else ""

    def _distinct(self, field, codes: np.ndarray, value_of, op, arg) -> np.ndarray:
        """A field with few distinct values: each distinct value matched once,
        then looked up by code (no sort for small code ranges)."""
        if not len(codes):
            return np.zeros(0, bool)
        uniq, inv = distinct_codes(codes)
        lut = np.array([self._match(field, value_of(u), op, arg) for u in uniq.tolist()], bool)
        return lut[inv]

    def _match(self, field, value, op, arg) -> bool:
        key = (field, value, op, id(arg))
        r = self._memo.get(key)
        if r is None:
            r = self._memo[key] = match_value(value, op, arg)
        return r

    def _id_mask(self, wf: np.ndarray, ids: np.ndarray, op, arg, nullable: bool) -> np.ndarray:
        n = len(ids)
        null = (ids == 0) if nullable else np.zeros(n, bool)
        if op == "$exists":
            return np.full(n, bool(arg))
        if op in ("$ne", "$nin"):
            return ~self._id_mask(wf, ids, "$eq" if op == "$ne" else "$in", arg, nullable)
        if op in ("$eq", "$in"):
            vals = [arg] if op == "$eq" else as_list(arg, op)
            m = np.zeros(n, bool)
            pairs: Dict[int, List[int]] = {}
            for v in vals:
                if v is None:
                    m |= null
                elif isinstance(v, str) and _CANONICAL_ID.fullmatch(v):
                    pairs.setdefault(int(v[:16], 16), []).append(int(v[17:], 16))
            for w, ts in pairs.items():
                sel = wf == np.uint64(w)
                m |= sel & (np.isin(ids, np.array(ts, np.uint64)) if len(ts) > 1
                            else ids == np.uint64(ts[0])) & ~null
            return m
        if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(arg, str) and _CANONICAL_ID.fullmatch(arg):
            W, T = np.uint64(int(arg[:16], 16)), np.uint64(int(arg[17:], 16))
            if op in ("$gt", "$gte"):
                m = (wf > W) | ((wf == W) & ((ids > T) if op == "$gt" else (ids >= T)))
            else:
                m = (wf < W) | ((wf == W) & ((ids < T) if op == "$lt" else (ids <= T)))
            return m & ~null
        # anything else ($regex, orderings against other strings): on the values themselves
        self.budget.tick(n)
        vals = [None if (nullable and i == 0) else f"{w:016x}-{i:016x}"
                for w, i in zip(wf.tolist(), ids.tolist())]
        return np.fromiter((match_value(v, op, arg) for v in vals), bool, n)

    def _payload_values(self, field: str, rows) -> list:
        """The field's value in each row's document (MISSING where absent)."""
        if self.values is None:
            return [get_path(d, field) for d in self.documents(rows)]
        key = (self.block.key, field)
        every = self.values.get(key)
        if every is None:
            every = [get_path(d, field) for d in self.documents(np.arange(self.block.n))]
            self.values.put(key, every)
        if len(rows) == self.block.n:
            return every
        return [every[r] for r in np.asarray(rows).tolist()]

    def documents(self, rows):
        """Per row, the payload fields of its document (decoded once per row)."""
        rows = np.asarray(rows, np.int64)
        known = self._docs
        missing = [r for r in rows.tolist() if r not in known]
        for k in range(0, len(missing), 4096):
            part = missing[k:k + 4096]
            self.budget.check()
            for r, d in zip(part, payload_documents(self.block, part)):
                known[r] = d
        return [known[r] for r in rows.tolist()]


_NUMERIC = (int, float)


def _values_mask(values: list, op: str, arg) -> np.ndarray:
    """One operator over values taken from documents (MISSING where absent):
    numpy when they are all plain numbers (or text compared for equality),
    else match_value one by one."""
    n = len(values)
    kinds = {type(v) for v in values}
    if op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte") and kinds and is_number(arg):
        if kinds <= {int}:
            try:
                arr = np.array(values, np.int64)
            except OverflowError:
                arr = None
            if arr is not None:
                m = _num_cmp(arr, "$eq" if op == "$ne" else op, arg)
                return ~m if op == "$ne" else m
        elif kinds <= {float} or (kinds <= {int, float} and
                                  all(abs(v) < (1 << 53) for v in values if type(v) is int)):
            arr = np.array(values, np.float64)
            m = _num_cmp(arr, "$eq" if op == "$ne" else op, arg)
            return ~m if op == "$ne" else m
    if op in ("$eq", "$ne") and isinstance(arg, str) and kinds == {str}:
        m = np.array(values, dtype=object) == arg
        return ~m if op == "$ne" else m
    return np.fromiter((match_value(v, op, arg) for v in values), bool, n)


def block_mask(block: Block, cond: Optional[dict], budget: Budget = UNBOUNDED,
               values: Optional["ValueCache"] = None) -> np.ndarray:
    """Rows of the block that match the filter (exact), as row numbers."""
    if not cond:
        return np.arange(block.n)
    m, _exact = mask(cond, BlockColumns(block, budget, values), np.arange(block.n))
    return np.flatnonzero(m)


class ValueCache:
    """Payload values a filter looked at, per block and field (``used.step``
    of every row of a batch): the next query on that field (the count, the
    next page) compares them again without decoding the payloads.  Blocks
    never change once stored, so entries stay right; at most ``max_values``
    values are kept, least recently used first out."""

    def __init__(self, max_values: int = 8_000_000):
        import threading
        from collections import OrderedDict
        self.max_values = max_values
        self.held = 0
        self.items: "OrderedDict[tuple, list]" = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            v = self.items.get(key)
            if v is not None:
                self.items.move_to_end(key)
            return v

    def put(self, key, values: list) -> None:
        with self.lock:
            if key in self.items or len(values) > self.max_values:
                return
            self.items[key] = values
            self.held += len(values)
            while self.held > self.max_values:
                _k, old = self.items.popitem(last=False)
                self.held -= len(old)


# -- matching, counting --------------------------------------------------------------------
def matching(table: Table, cond: Optional[dict], budget: Budget = UNBOUNDED,
             refs: Optional[Sequence[Ref]] = None) -> Iterator[Tuple[Ref, Block, np.ndarray]]:
    """(ref, block, matching rows) of every block with a match."""
    refs = table.refs(cond) if refs is None else refs
    for ref, block in table.blocks(refs):
        budget.check()
        rows = block_mask(block, cond, budget, table.values)
        if len(rows):
            yield ref, block, rows


def count(table: Table, cond: Optional[dict], budget: Budget = UNBOUNDED) -> int:
    return sum(len(rows) for _r, _b, rows in matching(table, cond, budget))


def find(table: Table, cond: Optional[dict], budget: Budget = UNBOUNDED,
         fields: Optional[Sequence[str]] = None, stats: Optional[dict] = None) -> List[dict]:
    """Every matching document, in table order."""
    out: List[dict] = []
    for _ref, block, rows in matching(table, cond, budget):
        for k in range(0, len(rows), 4096):
            budget.check()
            out.extend(documents(block, rows[k:k + 4096], fields, stats))
    return out


# -- sort keys on columns ------------------------------------------------------------------
COLUMN_SORT_FIELDS = frozenset(FIXED_FIELDS)
_BOUND_KEYS = {"start_ns": ("t0", "s1"), "started_at": ("t0", "s1"), "end_ns": ("e0", "t1"),
               "ended_at": ("e0", "t1"), "rank": ("r0", "r1")}


def column_sortable(order) -> bool:
    return all(f in COLUMN_SORT_FIELDS for f, _d in order)


def _key_arrays(block: Block, rows: np.ndarray, field: str) -> List[np.ndarray]:
    """The sort key of a field for rows, as arrays ordered like the
    documents' values (sort_key): numbers, or strings (as numpy unicode)."""
    c = block.cols
    if field in _INT_FIELDS:
        return [c[_INT_FIELDS[field]][rows].astype(np.int64)]
    if field in _SEC_FIELDS:
        return [c[_SEC_FIELDS[field]][rows].astype(np.float64) / 1e9]
    if field in _CODE_FIELDS:
        return [block.names(_CODE_FIELDS[field], rows).astype(str)]
    if field == "status":
        codes = c["status"][rows]
        uniq, inv = np.unique(codes, return_inverse=True)
        return [np.array([status_name(u) for u in uniq.tolist()] or [""], dtype=str)[inv.reshape(-1)]
                if len(codes) else np.zeros(0, "U1")]
    if field == "workflow_id":
        return [c["workflow_id"][rows].astype(np.uint64)]
    if field == "task_id":
        return [c["workflow_id"][rows].astype(np.uint64), c["task_id"][rows].astype(np.uint64)]
    # parent_task_id: None first, then by (workflow, parent id)
    pid = c["parent_id"][rows].astype(np.uint64)
    has = (pid != 0).astype(np.uint8)
    return [has, np.where(has, c["workflow_id"][rows], 0).astype(np.uint64), pid]


def _after_values(field: str, value) -> Optional[list]:
    """A cursor's value of a field in the form of _key_arrays (None: not comparable)."""
    if field in _INT_FIELDS:
        return [int(value)] if isinstance(value, int) and not isinstance(value, bool) else None
    if field in _SEC_FIELDS:
        return [float(value)] if is_number(value) else None
    if field in _CODE_FIELDS or field == "status":
        return [value] if isinstance(value, str) else None
    if field == "workflow_id":
        return [int(value, 16)] if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) else None
    if field == "task_id":
        if isinstance(value, str) and _CANONICAL_ID.fullmatch(value):
            return [int(value[:16], 16), int(value[17:], 16)]
        return None
    if value is None:
        return [0, 0, 0]
    if isinstance(value, str) and _CANONICAL_ID.fullmatch(value):
        return [1, int(value[:16], 16), int(value[17:], 16)]
    return None


def _lex_after(keys: List[Tuple[np.ndarray, int]], after: list) -> np.ndarray:
    """Rows whose key comes after ``after`` in the order (directions applied)."""
    n = len(keys[0][0]) if keys else 0
    gt = np.zeros(n, bool)
    eq = np.ones(n, bool)
    for (arr, d), a in zip(keys, after):
        if arr.dtype.kind == "u":
            a = np.uint64(a) if arr.dtype == np.uint64 else a
        later = (arr > a) if d > 0 else (arr < a)
        gt |= eq & later
        eq &= arr == a
    return gt


def _rank_keys(keys: List[Tuple[np.ndarray, int]]) -> List[np.ndarray]:
    """Keys np.lexsort can take (primary last), every one ascending."""
    out = []
    for arr, d in keys:
        if arr.dtype.kind == "U":
            _u, inv = np.unique(arr, return_inverse=True)
            arr = inv.reshape(-1).astype(np.int64)
        if d < 0:
            arr = -arr if arr.dtype.kind == "f" else ~arr
        out.append(arr)
    return out[::-1]


class _Keys:
    """Sort keys of some rows of one or more blocks: (array, direction) per
    key part, plus which block (``bid``) and row each belongs to."""

    __slots__ = ("parts", "bid", "row")

    def __init__(self, parts, bid, row):
        self.parts = parts
        self.bid = bid
        self.row = row

    @classmethod
    def of(cls, block, rows, order, bid) -> "_Keys":
        parts = []
        for field, d in order:
            parts.extend((a, d) for a in _key_arrays(block, rows, field))
        return cls(parts, np.full(len(rows), bid, np.int64), np.asarray(rows, np.int64))

    def __len__(self):
        return len(self.row)

    def take(self, idx) -> "_Keys":
        return _Keys([(a[idx], d) for a, d in self.parts], self.bid[idx], self.row[idx])

    def concat(self, other: "_Keys") -> "_Keys":
        if not len(self):
            return other
        return _Keys([(np.concatenate([a, b]), d) for (a, d), (b, _) in zip(self.parts, other.parts)],
                     np.concatenate([self.bid, other.bid]), np.concatenate([self.row, other.row]))

    def order(self) -> np.ndarray:
        return np.lexsort(_rank_keys(self.parts)) if len(self) else np.zeros(0, np.int64)

    def primary(self) -> np.ndarray:
        arr, d = self.parts[0]
        return arr if d > 0 or arr.dtype.kind == "U" else (-arr if arr.dtype.kind == "f" else ~arr)

    def values(self, i: int) -> list:
        return [a[i].item() for a, _d in self.parts]


def _after_parts(order, after: Optional[list]) -> Optional[list]:
    if after is None:
        return None
    out = []
    for (field, _d), v in zip(order, after):
        vals = _after_values(field, v)
        if vals is None:
            return None
        out.extend(vals)
    return out


def _bounded_refs(refs: List[Ref], order) -> Tuple[List[Ref], Optional[callable]]:
    """refs in the order of the primary sort field's bound, and a function
    giving a ref's best possible primary key (None when the summaries have no
    bound for it)."""
    field, d = order[0]
    keys = _BOUND_KEYS.get(field)
    if keys is None or not all(keys[0] in r.summary and keys[1] in r.summary for r in refs):
        return refs, None
    scale = 1e9 if field in _SEC_FIELDS else 1
    if d > 0:
        def best(r):
            v = r.summary[keys[0]]
            return v / scale if scale != 1 else int(v)
        return sorted(refs, key=lambda r: int(r.summary[keys[0]])), best

    def best_desc(r):
        v = r.summary[keys[1]]
        return v / scale if scale != 1 else int(v)
    return sorted(refs, key=lambda r: -int(r.summary[keys[1]])), best_desc


def _beyond(best, kth, d: int) -> bool:
    """Whether a block whose best primary key is ``best`` cannot hold a row
    ordered before the current k-th (``kth``, a document-order value)."""
    return best > kth if d > 0 else best < kth


# -- one page ------------------------------------------------------------------------------
class Page:
    """One page of matches: its rows (``blocks`` by id and ``keys`` in order),
    or, for orders the columns cannot give, its documents (``docs``);
    ``last`` the sort values of its last row (where a cursor resumes),
    ``more`` whether matches follow it, and ``total`` the number of matches
    when reading the page saw every one of them (else None)."""

    __slots__ = ("blocks", "keys", "docs", "last", "more", "total", "stats")

    def __init__(self, blocks=None, keys=None, docs=None, last=None, more=False, total=None, stats=None):
        self.blocks = blocks
        self.keys = keys
        self.docs = docs
        self.last = last
        self.more = more
        self.total = total
        self.stats = stats

    def __len__(self) -> int:
        return len(self.docs) if self.docs is not None else (len(self.keys) if self.keys is not None else 0)

    def documents(self, fields: Optional[Sequence[str]] = None) -> List[dict]:
        if self.docs is not None:
            return [project(d, fields) for d in self.docs]
        if self.keys is None:
            return []
        return _materialize(self.blocks, self.keys, fields, self.stats)

    def json(self, fields: Optional[Sequence[str]] = None, style: str = "python", sep: bytes = b",") -> bytes:
        """The page's documents as JSON text, each followed by ``sep``
        (``flowcept.query.documents.json_text``)."""
        if self.docs is not None:
            enc = dumps if style == "orjson" else dumps_python
            return b"".join(enc(project(d, fields)) + sep for d in self.docs)
        if self.keys is None:
            return b""
        return json_text(self.blocks, self.keys.bid, self.keys.row, fields, style, sep, self.stats)


def page(table: Table, cond: Optional[dict], order, limit: int, offset: int = 0,
         after: Optional[list] = None, fields: Optional[Sequence[str]] = None,
         budget: Budget = UNBOUNDED, stats: Optional[dict] = None) -> Tuple[List[dict], Optional[list]]:
    """The ``limit`` matches that come first in ``order`` after ``offset``
    matches, or right after the row whose sort values are ``after``:
    (documents, sort values of the last one); see :func:`page_rows`."""
    p = page_rows(table, cond, order, limit, offset, after, budget, stats)
    return p.documents(fields), p.last


def page_rows(table: Table, cond: Optional[dict], order, limit: int, offset: int = 0,
              after: Optional[list] = None, budget: Budget = UNBOUNDED,
              stats: Optional[dict] = None) -> Page:
    """One page (:class:`Page`) of the matches in ``order``: the ``limit``
    that come first after ``offset`` matches, or right after the row whose
    sort values are ``after``.  Column-sortable orders keep only the best
    rows of each block (top k), read the blocks in the order of their index
    bound on the primary sort field and stop as soon as no unread block can
    beat the page (blocks wholly before a cursor are not read at all); no
    document is built.  Other orders sort every matching document."""
    order = tuple(order)
    if not column_sortable(order):
        docs = find(table, cond, budget, stats=stats)
        sort_docs(docs, order)
        part = docs[offset:offset + limit]
        last = [_doc_value(part[-1], f) for f, _d in order] if part else None
        return Page(docs=part, last=last, more=offset + len(part) < len(docs), total=len(docs), stats=stats)
    after_parts = _after_parts(order, after)
    k = limit + 1 + (0 if after_parts is not None else offset)   # one more: whether more follow
    all_refs = table.refs(cond)
    refs, best = _bounded_refs(all_refs, order)
    skipped = False
    if after_parts is not None and best is not None:
        cut = _after_bound(after)
        if cut is not None:
            d = order[0][1]   # a block whose every row comes before the cursor's is not read
            kept = [r for r in refs if not (_far_bound(r, order) < cut if d > 0 else _far_bound(r, order) > cut)]
            skipped = len(kept) < len(refs)
            refs = kept
    cand = None
    cand_holder: list = [None]
    blocks: Dict[int, Block] = {}
    bid = 0
    seen = 0
    reader = _LazyBlocks(table, refs, cand_holder, best, order, k)
    for ref, block in reader:
        budget.check()
        rows = block_mask(block, cond, budget, table.values)
        seen += len(rows)
        if not len(rows):
            continue
        keys = _Keys.of(block, rows, order, bid)
        if after_parts is not None:
            keep = _lex_after(keys.parts, after_parts)
            keys = keys.take(np.flatnonzero(keep))
            if not len(keys):
                continue
        if k and len(keys) > 4 * k and keys.parts[0][0].dtype.kind != "U":
            prim = keys.primary()
            kth = np.partition(prim, k - 1)[k - 1]
            keys = keys.take(np.flatnonzero(prim <= kth))
        blocks[bid] = block
        bid += 1
        cand = keys if cand is None else cand.concat(keys)
        if len(cand) > k:
            cand = cand.take(cand.order()[:k])
            live = set(np.unique(cand.bid).tolist())
            for b in [b for b in blocks if b not in live]:
                del blocks[b]
        cand_holder[0] = cand
    total = seen if not (reader.stopped or skipped) else None
    if cand is None or not len(cand):
        return Page(blocks={}, keys=None, total=total, stats=stats)
    cand = cand.take(cand.order())
    if after_parts is None:
        cand = cand.take(np.arange(offset, len(cand)))
    more = len(cand) > limit
    cand = cand.take(np.arange(min(limit, len(cand))))
    last = None
    if len(cand):
        last_doc = documents(blocks[int(cand.bid[-1])], [int(cand.row[-1])],
                             [f for f, _d in order])[0]
        last = [_doc_value(last_doc, f) for f, _d in order]
    live = set(np.unique(cand.bid).tolist())
    return Page(blocks={b: blk for b, blk in blocks.items() if b in live}, keys=cand, last=last,
                more=more, total=total, stats=stats)


def _after_bound(after: list):
    """The cursor's value of the primary sort field when it is a number (the
    unit of the index bounds as :func:`_far_bound` gives them), else None."""
    v = after[0] if after else None
    if not is_number(v) or isinstance(v, bool):
        return None
    return v


def _far_bound(r: Ref, order):
    """A block's bound on the primary field at the far end of the order (its
    largest value ascending, its smallest descending)."""
    field, d = order[0]
    keys = _BOUND_KEYS[field]
    v = r.summary[keys[1] if d > 0 else keys[0]]
    return v / 1e9 if field in _SEC_FIELDS else int(v)


class _LazyBlocks:
    """The blocks of refs, stopping once the next block's bound cannot beat
    the current k-th candidate (``stopped`` then says so).  It reads one
    block, then two, four, up to eight at a time: in start order the first
    page of a selective filter is often in the first block."""

    def __init__(self, table, refs, holder, best, order, k):
        self.table, self.refs, self.holder, self.best = table, refs, holder, best
        self.order, self.k = order, k
        self.stopped = False

    def __iter__(self):
        table, refs, best, k = self.table, self.refs, self.best, self.k
        if best is None or not k:
            yield from table.blocks(refs)
            return
        d = self.order[0][1]
        step = 1
        i = 0
        while i < len(refs):
            for j, (ref, block) in enumerate(table.blocks(refs[i:i + step])):
                if self._done(best(refs[i + j]), d):
                    return
                yield ref, block
            i += step
            step = min(step * 2, 8)

    def _done(self, bound, d) -> bool:
        cand, k = self.holder[0], self.k
        if cand is None or len(cand) < k:
            return False
        kth = cand.take(cand.order()[k - 1:k]).parts[0][0][0].item()
        self.stopped = _beyond(bound, kth, d)
        return self.stopped


def _doc_value(doc: dict, field: str):
    v = doc.get(field, MISSING) if "." not in field else MISSING
    if v is MISSING:
        from flowcept.query.filters import get_path
        v = get_path(doc, field)
    return None if v is MISSING else v


def _materialize(blocks: Dict[int, Block], cand: _Keys, fields, stats, bodies: bool = False) -> list:
    """Documents of the candidates, in the candidates' order ((document,
    decoded payload) pairs with ``bodies``)."""
    out: list = [None] * len(cand)
    for b in np.unique(cand.bid).tolist():
        pos = np.flatnonzero(cand.bid == b)
        got: Optional[list] = [] if bodies else None
        docs = documents(blocks[b], cand.row[pos], fields, stats, bodies=got)
        for j, (p, d) in enumerate(zip(pos.tolist(), docs)):
            out[p] = (d, got[j]) if bodies else d
    return out


# -- every match, in order -------------------------------------------------------------------
def stream(table: Table, cond: Optional[dict], order, fields: Optional[Sequence[str]] = None,
           budget: Budget = UNBOUNDED, stats: Optional[dict] = None, limit: Optional[int] = None,
           chunk: int = 8192, bodies: bool = False) -> Iterator[List[dict]]:
    """Every match in ``order``, as lists of documents (at most ``chunk``
    each), without holding the answer (see :func:`ordered`).  ``bodies``:
    lists of (document, decoded payload) pairs instead."""
    order = tuple(order)
    left = limit if limit is not None else -1
    if not column_sortable(order):
        if bodies:
            raise ValueError("bodies come with whole documents in a column order")
        docs = find(table, cond, budget, stats=stats)
        sort_docs(docs, order)
        if left >= 0:
            docs = docs[:left]
        for k in range(0, len(docs), chunk):
            yield [project(d, fields) for d in docs[k:k + chunk]]
        return
    for blocks, keys in ordered(table, cond, order, budget, chunk, limit):
        yield _materialize(blocks, keys, fields, stats, bodies)


def stream_json(table: Table, cond: Optional[dict], order, fields: Optional[Sequence[str]] = None,
                budget: Budget = UNBOUNDED, stats: Optional[dict] = None, limit: Optional[int] = None,
                chunk: int = 16384, style: str = "orjson") -> Iterator[bytes]:
    """Every match in ``order`` as JSON lines, in chunks of bytes: the text of
    :func:`stream`'s documents (``dumps_lines``), written by
    ``flowcept.query.documents.json_text`` from the columns."""
    order = tuple(order)
    if not column_sortable(order):
        enc = dumps if style == "orjson" else dumps_python
        for docs in stream(table, cond, order, fields, budget, stats, limit, chunk):
            yield b"".join(enc(d) + b"\n" for d in docs)
        return
    for blocks, keys in ordered(table, cond, order, budget, chunk, limit):
        yield json_text(blocks, keys.bid, keys.row, fields, style, b"\n", stats)


def ordered(table: Table, cond: Optional[dict], order, budget: Budget = UNBOUNDED,
            chunk: int = 8192, limit: Optional[int] = None):
    """Every match in a column ``order``, in chunks of at most ``chunk``
    rows: (blocks by id, keys of the chunk's rows in order).  When the
    primary sort field has bounds in the summaries (start/end time, rank),
    blocks are read in bound order and rows are handed out as soon as no
    later block can come before them, so only the blocks that overlap in
    that field are held; otherwise the sort keys of every match are sorted
    first (columns only) and the blocks read again chunk by chunk."""
    order = tuple(order)
    left = limit if limit is not None else -1
    refs, best = _bounded_refs(table.refs(cond), order)
    if best is None:
        gen = _ordered_all(table, refs, cond, order, budget, chunk)
    else:
        gen = _ordered_bounded(table, refs, best, cond, order, budget, chunk)
    for blocks, keys in gen:
        if left >= 0:
            keys = keys.take(np.arange(min(left, len(keys))))
            left -= len(keys)
        if len(keys):
            yield blocks, keys
        if left == 0:
            return


def _ready(buf: "_Keys", nxt, d: int) -> int:
    """How many of the sorted rows come before any row of a block whose best
    primary key is ``nxt``."""
    prim = buf.parts[0][0]
    if d > 0:
        return int(np.searchsorted(prim, nxt, "left"))
    if prim.dtype.kind == "f":
        return int(np.searchsorted(-prim, -nxt, "left"))
    return int(np.searchsorted(~prim, ~np.int64(nxt), "left"))


def _ordered_bounded(table, refs, best, cond, order, budget, chunk):
    d = order[0][1]
    buf = None          # sorted rows not handed out yet
    new = []            # keys of blocks read since the last sort
    added = 0
    blocks: Dict[int, Block] = {}
    bid = 0
    for i, (ref, block) in enumerate(table.blocks(refs)):
        budget.check()
        rows = block_mask(block, cond, budget, table.values)
        if len(rows):
            new.append(_Keys.of(block, rows, order, bid))
            blocks[bid] = block
            bid += 1
            added += len(rows)
        last = i + 1 >= len(refs)
        held = len(buf) if buf is not None else 0
        if not new or (not last and added < max(chunk, held)):
            continue   # sort once enough has come in: each row is sorted a few times at most
        for k in new:
            buf = k if buf is None else buf.concat(k)
        new, added = [], 0
        buf = buf.take(buf.order())
        ready = len(buf) if last else _ready(buf, best(refs[i + 1]), d)
        if not ready:
            continue
        out = buf.take(np.arange(ready))
        buf = buf.take(np.arange(ready, len(buf)))
        for k in range(0, len(out), chunk):
            budget.check()
            yield blocks, out.take(np.arange(k, min(k + chunk, len(out))))
        live = set(np.unique(buf.bid).tolist()) if len(buf) else set()
        for b in [b for b in blocks if b not in live]:
            del blocks[b]


def _ordered_all(table, refs, cond, order, budget, chunk):
    keys = None
    where: Dict[int, Ref] = {}
    bid = 0
    for ref, block in table.blocks(refs):
        budget.check()
        rows = block_mask(block, cond, budget, table.values)
        if not len(rows):
            continue
        k = _Keys.of(block, rows, order, bid)
        where[bid] = ref
        bid += 1
        keys = k if keys is None else keys.concat(k)
    if keys is None:
        return
    keys = keys.take(keys.order())
    for k in range(0, len(keys), chunk):
        budget.check()
        part = keys.take(np.arange(k, min(k + chunk, len(keys))))
        need = sorted(set(part.bid.tolist()))
        loaded = {b: block for b, (_r, block) in zip(need, table.blocks([where[b] for b in need]))}
        yield loaded, part


# -- statistics on columns -------------------------------------------------------------------
STAT_GROUPS = {"activity": "activity_id", "rank": "rank", "hostname": "hostname", "status": "status"}


def distinct_codes(codes: np.ndarray):
    """(distinct values, index of each element's value) of an integer array:
    one pass and a table when the values span a small range, a sort otherwise."""
    n = len(codes)
    if not n:
        return codes[:0], np.zeros(0, np.int64)
    first = codes[0]
    if (codes == first).all():
        return codes[:1], np.zeros(n, np.int64)
    lo, hi = int(codes.min()), int(codes.max())
    if hi - lo < (1 << 20):
        seen = np.zeros(hi - lo + 1, bool)
        seen[codes - lo if lo else codes] = True
        uniq = np.flatnonzero(seen)
        lut = np.zeros(hi - lo + 1, np.int64)
        lut[uniq] = np.arange(len(uniq))
        return (uniq + lo).astype(codes.dtype), lut[codes - lo if lo else codes]
    uniq, inv = np.unique(codes, return_inverse=True)
    return uniq, inv.reshape(-1)


def _group_values(block: Block, rows: np.ndarray, by: str):
    """(distinct values, index of each row's value) of the group field."""
    c = block.cols
    col = {"activity": "activity", "hostname": "node", "status": "status", "rank": "rank"}[by]
    codes = c[col] if len(rows) == block.n else c[col][rows]
    uniq, inv = distinct_codes(codes)
    if by in ("activity", "hostname"):
        return [block.strings[u] if u < len(block.strings) else "" for u in uniq.tolist()], inv
    if by == "status":
        return [status_name(u) for u in uniq.tolist()], inv
    return uniq.tolist(), inv


def group_stats(table: Table, cond: Optional[dict], by: str = "activity",
                budget: Budget = UNBOUNDED) -> Tuple[int, List[dict]]:
    """(tasks, rows) of duration statistics per group, computed on columns
    (no payload is read): count, errors, mean/p50/p95/p99/max/total seconds.
    Durations are summed in integer nanoseconds, so every store gives the
    same figures."""
    if by not in STAT_GROUPS:
        raise ValueError(f"group by one of {', '.join(STAT_GROUPS)}")
    gid: Dict[object, int] = {}
    parts_g, parts_d, parts_e = [], [], []
    for _ref, block, rows in matching(table, cond, budget):
        values, inv = _group_values(block, rows, by)
        lut = np.array([gid.setdefault(v, len(gid)) for v in values], np.int64)
        parts_g.append(lut[inv.reshape(-1)])
        c = block.cols
        parts_d.append(c["end_ns"][rows].astype(np.int64) - c["start_ns"][rows].astype(np.int64))
        parts_e.append(c["status"][rows] == STATUS_ERROR)
    if not parts_g:
        return 0, []
    g = np.concatenate(parts_g)
    dur = np.concatenate(parts_d)
    err = np.concatenate(parts_e)
    budget.check()
    dtype = np.uint16 if len(gid) < (1 << 16) else np.int64
    srt = np.argsort(g.astype(dtype), kind="stable")
    counts = np.bincount(g, minlength=len(gid))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    names = [None] * len(gid)
    for v, i in gid.items():
        names[i] = v
    rows_out = []
    for i in sorted(range(len(gid)), key=lambda i: sort_key(names[i])):
        budget.check()
        sel = srt[bounds[i]:bounds[i + 1]]
        d = dur[sel]
        total = int(d.sum())
        p50, p95, p99, mx = np.percentile(d / 1e9, [50, 95, 99, 100])
        rows_out.append({by: names[i], "count": int(counts[i]), "errors": int(err[sel].sum()),
                         "mean_s": total / len(d) / 1e9, "p50_s": float(p50), "p95_s": float(p95),
                         "p99_s": float(p99), "max_s": float(mx), "total_s": total / 1e9})
    return int(len(g)), rows_out


def summarize(table: Table, cond: Optional[dict], budget: Budget = UNBOUNDED) -> dict:
    """Tasks by status and by activity, ranks, hosts and the time span of the
    matches, on columns."""
    by_act: Dict[str, Dict[str, int]] = {}
    status: Dict[str, int] = {}
    ranks, hosts = set(), set()
    t0, t1, n = None, None, 0
    for _ref, block, rows in matching(table, cond, budget):
        c = block.cols
        n += len(rows)
        acts, ai = _group_values(block, rows, "activity")
        sts, si = _group_values(block, rows, "status")
        pair = ai.reshape(-1).astype(np.int64) * len(sts) + si.reshape(-1)
        cnt = np.bincount(pair, minlength=len(acts) * len(sts))
        for p in np.flatnonzero(cnt).tolist():
            a, s = acts[p // len(sts)], sts[p % len(sts)]
            by_act.setdefault(a, {}).setdefault(s, 0)
            by_act[a][s] += int(cnt[p])
            status[s] = status.get(s, 0) + int(cnt[p])
        ranks.update(np.unique(c["rank"][rows]).tolist())
        hosts.update(_group_values(block, rows, "hostname")[0])
        lo, hi = int(c["start_ns"][rows].min()), int(c["end_ns"][rows].max())
        t0 = lo if t0 is None else min(t0, lo)
        t1 = hi if t1 is None else max(t1, hi)
    return {"tasks": n, "by_status": dict(sorted(status.items())),
            "by_activity": {k: dict(sorted(v.items())) for k, v in sorted(by_act.items())},
            "ranks": sorted(ranks), "hosts": sorted(hosts),
            "start_ns": t0, "end_ns": t1}


__all__ = ["Ref", "Table", "StoreTable", "BlockColumns", "block_mask", "matching", "count", "find",
           "Page", "page", "page_rows", "stream", "stream_json", "group_stats", "summarize",
           "column_sortable"]
