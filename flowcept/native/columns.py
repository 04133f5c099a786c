"""Column work for the compaction in C (csrc/fc_columns.h): batch records decoded into
columns, sorted parts merged into one order, duplicates dropped, chunks gathered (and
shuffled) for HDF5.  Each function has its numpy reference here (``*_numpy``): the tests
check the C against it, as flowcept.store.summary does for the batch summary.

A merged order names a row by its part and its row in that part, packed in a uint64:
``part << ROW_BITS | row``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from flowcept.native import ffi, lib
from flowcept.record.layout import FLAG_WORKFLOW, RECORD_DTYPE

ROW_BITS = lib.FC_ORDER_ROW_BITS
ROW_MASK = (1 << ROW_BITS) - 1
COPY, LUT, ADD, CONST, SEQ = lib.FC_COL_COPY, lib.FC_COL_LUT, lib.FC_COL_ADD, lib.FC_COL_CONST, lib.FC_COL_SEQ


class ColumnError(ValueError):
    """A C column function refused its input; the message says which and why."""


def _check(rc: int, what: str) -> int:
    if rc < 0:
        import errno
        import os
        raise ColumnError(f"{what}: {errno.errorcode.get(-rc, -rc)} ({os.strerror(-rc)})")
    return rc


def address(a: np.ndarray) -> int:
    """The address of an array's first element."""
    return a.__array_interface__["data"][0]


def _ptr(a: np.ndarray):
    return ffi.cast("void *", address(a))


def _addresses(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([address(a) for a in arrays], np.uint64)


# --------------------------------------------------------------------------- decode


class Decoder:
    """Writes batch frames' task records (workflow records skipped) into columns.

    ``specs``: one (kind, record field or None, destination array) per column: COPY the
    field, LUT the field through a batch's string map, ADD a batch's offset to the field,
    CONST a batch's value (``consts``, in the order of the CONST columns), SEQ a batch's
    first row number counted up.  Made once per set of destination arrays."""

    def __init__(self, specs: Sequence[Tuple[int, Optional[str], np.ndarray]],
                 addresses: Optional[Sequence[int]] = None):
        self.specs = list(specs)
        self.cap = min(len(d) for _k, _f, d in self.specs) if self.specs else 0
        self.c = ffi.new("fc_column[]", max(len(self.specs), 1))
        self.lut_cols, self.add_cols, self.const_cols, self.seq_cols = [], [], [], []
        for i, (kind, fld, dst) in enumerate(self.specs):
            if not dst.flags.c_contiguous or not dst.flags.writeable:
                raise ValueError("decoder columns must be contiguous, writable arrays")
            c = self.c[i]
            c.dst = ffi.cast("void *", addresses[i]) if addresses is not None else _ptr(dst)
            c.dst_size = dst.dtype.itemsize
            c.kind = kind
            if fld is not None:
                ft, off = RECORD_DTYPE.fields[fld][:2]
                c.src_off, c.src_size = off, ft.itemsize
            {LUT: self.lut_cols, ADD: self.add_cols, CONST: self.const_cols,
             SEQ: self.seq_cols}.get(kind, []).append(i)

    def fill(self, frame, at: int, lut: Optional[np.ndarray] = None, add: int = 0,
             consts: Sequence[int] = (), seq: int = 0) -> int:
        """Rows of one batch at rows ``at``.. of the columns; returns how many."""
        c = self.c
        if self.lut_cols:
            for i in self.lut_cols:
                c[i].lut = ffi.cast("const uint32_t *", address(lut))
                c[i].lut_len = len(lut)
        for i in self.add_cols:
            c[i].value = add
        for i, v in zip(self.const_cols, consts):
            c[i].value = v
        for i in self.seq_cols:
            c[i].value = seq
        buf = ffi.from_buffer(frame)
        return _check(lib.fc_batch_columns(buf, len(buf), c, len(self.specs), at, self.cap),
                      "fc_batch_columns")


def decode_numpy(frame, specs, at: int, lut=None, add: int = 0, consts=(), seq: int = 0) -> int:
    """Decoder.fill with numpy (the reference)."""
    from flowcept.native.batch import Batch
    recs = Batch(frame, check=False).records
    recs = recs[(recs["flags"] & FLAG_WORKFLOW) == 0]
    m = len(recs)
    hi = at + m
    ci = 0
    for kind, fld, dst in specs:
        if kind == COPY:
            dst[at:hi] = recs[fld]
        elif kind == LUT:
            np.take(lut, np.minimum(recs[fld], len(lut) - 1), out=dst[at:hi])
        elif kind == ADD:
            np.add(recs[fld], np.uint64(add), out=dst[at:hi], casting="unsafe")
        elif kind == CONST:
            dst[at:hi] = consts[ci]
            ci += 1
        elif kind == SEQ:
            dst[at:hi] = np.arange(seq, seq + m)
    return m


# --------------------------------------------------------------------------- merge


def merge_order_at(key_table: int, seq_table: int, lens: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """merge_order of parts given by address: ``key_table`` (and ``seq_table``, 0 for
    none) the address of an array of len(lens) column addresses."""
    lens = np.ascontiguousarray(lens, np.uint64)
    n = int(lens.sum())
    order = np.empty(n, np.uint64)
    merged = np.empty(n, np.int64)
    got = lib.fc_merge_order(len(lens), ffi.cast("const int64_t *const *", key_table),
                             ffi.cast("const int64_t *const *", seq_table),
                             ffi.cast("const uint64_t *", address(lens)),
                             ffi.cast("uint64_t *", address(order)),
                             ffi.cast("int64_t *", address(merged)))
    _check(got, "fc_merge_order")
    return order, merged


def merge_order(keys: Sequence[np.ndarray], seqs: Optional[Sequence[np.ndarray]] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Merges parts sorted by (keys, seqs) -- by keys, ties in row order, without seqs --
    ties between parts by part: (order, keys in that order)."""
    keys = [np.ascontiguousarray(a, np.int64) for a in keys]
    lens = np.array([len(a) for a in keys], np.uint64)
    kt = _addresses(keys)
    st = None
    if seqs is not None:
        seqs = [np.ascontiguousarray(a, np.int64) for a in seqs]
        if [len(a) for a in seqs] != lens.tolist():
            raise ValueError("one seq per key")
        st = _addresses(seqs)
    return merge_order_at(address(kt) if len(kt) else 0, address(st) if st is not None and len(st) else 0,
                          lens)


def merge_order_numpy(keys, seqs=None) -> Tuple[np.ndarray, np.ndarray]:
    """merge_order with numpy (the reference)."""
    part = np.concatenate([np.full(len(a), i, np.uint64) for i, a in enumerate(keys)]
                          + [np.empty(0, np.uint64)])
    row = np.concatenate([np.arange(len(a), dtype=np.uint64) for a in keys] + [np.empty(0, np.uint64)])
    key = np.concatenate([np.asarray(a, np.int64) for a in keys] + [np.empty(0, np.int64)])
    if seqs is None:
        o = np.lexsort((row, part, key))
    else:
        seq = np.concatenate([np.asarray(a, np.int64) for a in seqs] + [np.empty(0, np.int64)])
        o = np.lexsort((row, part, seq, key))
    return (part[o] << np.uint64(ROW_BITS)) | row[o], key[o]


# --------------------------------------------------------------------------- duplicates


def drop_duplicates_at(order: np.ndarray, keys: np.ndarray, lens: np.ndarray, workflow_id: int,
                       task_id: int, status: int, running: int) -> int:
    """drop_duplicates with the parts' columns given by address: each of ``workflow_id``,
    ``task_id``, ``status`` the address of an array of len(lens) column addresses."""
    if order.dtype != np.uint64 or keys.dtype != np.int64 or not (
            order.flags.c_contiguous and keys.flags.c_contiguous) or len(order) != len(keys):
        raise ValueError("order (uint64) and keys (int64) must be contiguous and of one length")
    lens = np.ascontiguousarray(lens, np.uint64)
    n = lib.fc_drop_duplicates(ffi.cast("uint64_t *", address(order)),
                               ffi.cast("int64_t *", address(keys)), len(order), len(lens),
                               ffi.cast("const uint64_t *", address(lens)),
                               ffi.cast("const uint64_t *const *", workflow_id),
                               ffi.cast("const uint64_t *const *", task_id),
                               ffi.cast("const uint16_t *const *", status), running)
    return _check(n, "fc_drop_duplicates")


def drop_duplicates(order: np.ndarray, keys: np.ndarray, workflow_id: Sequence[np.ndarray],
                    task_id: Sequence[np.ndarray], status: Sequence[np.ndarray],
                    running: int) -> int:
    """Drops duplicate tasks among rows of equal key from a merged order (in place, with
    their keys); returns how many rows are left (see fc_columns.h)."""
    for a, dt in ((workflow_id, np.uint64), (task_id, np.uint64), (status, np.uint16)):
        if any(x.dtype != dt or not x.flags.c_contiguous for x in a):
            raise ValueError("columns of the wrong type")
    wf, tid, stat = _addresses(workflow_id), _addresses(task_id), _addresses(status)
    lens = np.array([min(len(a), len(b), len(c)) for a, b, c in zip(workflow_id, task_id, status)],
                    np.uint64)
    return drop_duplicates_at(order, keys, lens, address(wf) if len(wf) else 0,
                              address(tid) if len(tid) else 0, address(stat) if len(stat) else 0,
                              running)


def drop_duplicates_numpy(order, keys, workflow_id, task_id, status, running) -> np.ndarray:
    """The positions in ``order`` that drop_duplicates keeps (the reference)."""
    part = (order >> np.uint64(ROW_BITS)).astype(np.intp)
    row = (order & np.uint64(ROW_MASK)).astype(np.intp)

    def col(cols):
        if not len(order):
            return np.empty(0, cols[0].dtype if len(cols) else np.uint64)
        return np.array([cols[p][r] for p, r in zip(part.tolist(), row.tolist())], cols[0].dtype)
    wf, tid, run = col(workflow_id), col(task_id), (col(status) == running).astype(np.uint8)
    pos = np.arange(len(order))
    o = np.lexsort((pos, run, tid, wf, keys))
    first = np.ones(len(o), bool)
    first[1:] = (wf[o][1:] != wf[o][:-1]) | (tid[o][1:] != tid[o][:-1]) | (keys[o][1:] != keys[o][:-1])
    return np.sort(o[first])


# --------------------------------------------------------------------------- gather


# fc_gather_piece and fc_gather_column as numpy records, so that the pieces and columns of
# a chunk are made in a few array operations
PIECE_DTYPE = np.dtype({
    "names": ["lens", "order", "first", "n", "nparts"],
    "formats": ["<u8", "<u8", "<u8", "<u8", "<u4"],
    "offsets": [ffi.offsetof("fc_gather_piece", f) for f in ("lens", "order", "first", "n", "nparts")],
    "itemsize": ffi.sizeof("fc_gather_piece")})
COLUMN_DTYPE = np.dtype({
    "names": ["bases", "out", "itemsize", "flags", "max"],
    "formats": ["<u8", "<u8", "<u4", "<u4", "<i8"],
    "offsets": [ffi.offsetof("fc_gather_column", f) for f in ("bases", "out", "itemsize", "flags", "max")],
    "itemsize": ffi.sizeof("fc_gather_column")})
SHUFFLE, MAX = lib.FC_GATHER_SHUFFLE, lib.FC_GATHER_MAX


def gather_at(pieces: np.ndarray, columns: np.ndarray, chunk: int) -> int:
    """fc_gather: the rows of ``pieces`` (PIECE_DTYPE records) into each of ``columns``
    (COLUMN_DTYPE records, whose ``out`` hold chunk elements; ``max`` is set in place);
    returns the number of rows."""
    return _check(lib.fc_gather(ffi.cast("const fc_gather_piece *", address(pieces)), len(pieces),
                                ffi.cast("fc_gather_column *", address(columns)), len(columns),
                                chunk), "fc_gather")


def gather(pieces: Sequence[Tuple[Sequence[np.ndarray], Optional[np.ndarray], int, int]],
           itemsize: int, chunk: int, shuffle: bool, want_max: bool = False):
    """The rows of the pieces -- (arrays of one column, one per part, of one dtype; order or
    None; first; n) -- one after the other, as ``chunk`` elements (zeros past the rows), in
    HDF5's shuffled byte planes when ``shuffle``: (uint8 array, largest element as int64
    when ``want_max`` and 8-byte items, else None)."""
    plan = np.zeros(len(pieces), PIECE_DTYPE)
    keep = []
    bases = []
    for i, (parts, order, first, n) in enumerate(pieces):
        lens = np.array([len(b) for b in parts], np.uint64)
        keep.append(lens)
        bases += [address(b) for b in parts]
        plan[i]["lens"] = address(lens)
        if order is not None:
            if order.dtype != np.uint64 or not order.flags.c_contiguous:
                raise ValueError("an order is a contiguous uint64 array")
            plan[i]["order"] = address(order)
        plan[i]["first"], plan[i]["n"], plan[i]["nparts"] = first, n, len(parts)
    table = np.array(bases + [0], np.uint64)
    out = np.empty(chunk * itemsize, np.uint8)
    col = np.zeros(1, COLUMN_DTYPE)
    col["bases"], col["out"], col["itemsize"] = address(table), address(out), itemsize
    col["flags"] = (SHUFFLE if shuffle else 0) | (MAX if want_max else 0)
    gather_at(plan, col, chunk)
    return out, (int(col["max"][0]) if want_max and itemsize == 8 else None)


def gather_numpy(pieces, itemsize: int, chunk: int, shuffle: bool, want_max: bool = False):
    """gather with numpy (the reference)."""
    parts = []
    for bases, order, first, n in pieces:
        if order is None:
            parts.append(np.asarray(bases[0]).view(np.uint8).reshape(-1, itemsize)[first:first + n])
        else:
            p = (order >> np.uint64(ROW_BITS)).astype(np.intp)
            r = (order & np.uint64(ROW_MASK)).astype(np.intp)
            rows = [np.asarray(bases[a]).view(np.uint8).reshape(-1, itemsize)[b]
                    for a, b in zip(p.tolist(), r.tolist())]
            parts.append(np.array(rows, np.uint8).reshape(-1, itemsize))
    data = np.zeros((chunk, itemsize), np.uint8)
    got = np.concatenate(parts) if parts else np.empty((0, itemsize), np.uint8)
    data[:len(got)] = got
    mx = None
    if want_max and itemsize == 8:
        vals = got.copy().view("<i8").ravel()
        mx = int(vals.max()) if len(vals) else -(1 << 63)
    out = np.ascontiguousarray(data.T).ravel() if shuffle else data.ravel()
    return out, mx


__all__ = ["ROW_BITS", "ROW_MASK", "COPY", "LUT", "ADD", "CONST", "SEQ", "ColumnError", "address",
           "Decoder", "decode_numpy", "merge_order", "merge_order_at", "merge_order_numpy",
           "drop_duplicates", "drop_duplicates_at", "drop_duplicates_numpy", "PIECE_DTYPE",
           "COLUMN_DTYPE", "SHUFFLE", "MAX", "gather", "gather_at", "gather_numpy"]
