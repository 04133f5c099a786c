"""Writing an archive's datasets: columns and blobs, chunk by chunk, compressed in a pool of
threads; the tables (strings, workflows, batch keys).

gzip chunks are shuffled and deflated here (zlib, or ISA-L's faster deflate when the optional
``isal`` package is installed; both release the GIL) and written raw with H5Dwrite_chunk: the
bytes are what HDF5's own shuffle + deflate filters make, so any HDF5 reads them, and the
compression scales with the cores.  lzf goes through h5py's filter pipeline.
"""
from __future__ import annotations

import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

try:  # ISA-L deflate: same zlib streams, several times faster (optional)
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None

from flowcept.archive.format import BLOB_CHUNK, COLS, Block


def _shuffle(chunk: np.ndarray) -> np.ndarray:
    """The bytes the HDF5 shuffle filter makes of a chunk (byte planes), as a contiguous
    array (numpy's strided copy runs without the GIL; ``tobytes`` of the transposed view
    would copy byte by byte holding it)."""
    isz = chunk.dtype.itemsize
    if isz == 1:
        return chunk
    return np.ascontiguousarray(chunk.view(np.uint8).reshape(-1, isz).T)


class Writer:
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

    def sibling(self) -> "Writer":
        """A writer for another thread: the same file and compression pool, its own chunks
        in flight."""
        w = Writer.__new__(Writer)
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


class Blob:
    """A growing uint8 dataset (payloads) written chunk by chunk while it grows:
    data is copied once, into a chunk buffer, which is compressed and written
    when full."""

    def __init__(self, writer: Writer, name: str):
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


def _gather(col: np.ndarray, sel) -> np.ndarray:
    return col[sel] if isinstance(sel, slice) else np.take(col, sel)


def _gather_pieces(pieces: List[Tuple[Block, object]], name: str, m: int, dtype) -> np.ndarray:
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


class TaskColumns:
    """The /tasks columns and the /index, written chunk by chunk from merged rows."""

    def __init__(self, writer: Writer, expect: int, chunk: int):
        self.w = writer
        self.chunk = chunk
        self.ds = {name: writer.column(name, dt, max(expect, 0), chunk) for name, dt in COLS}
        self.pieces: List[Tuple[Block, object]] = []   # rows of the chunk being filled
        self.fill = 0
        self.n = 0
        self.start_min: List[int] = []
        self.start_max: List[int] = []
        self.end_max: List[int] = []

    def append(self, rows: Block, order: Optional[np.ndarray] = None):
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

    def write_ordered(self, rows: "Block", order: Optional[np.ndarray], s: np.ndarray):
        """Writes all the rows (an empty file so far), in the order ``order`` (positions;
        None: as they are), ``s`` their start times in that order: each chunk of each
        column is gathered by the order inside the compression pool, in parallel."""
        assert self.n == 0 and not self.fill
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


def write_tables(h5, strings: List[str], workflows: Dict[int, dict], keys: List[tuple]) -> int:
    """/strings, /workflows and /batches; returns how many workflows."""
    import h5py
    import msgpack
    h5.create_dataset("strings", data=np.array(strings, dtype=object),
                      dtype=h5py.string_dtype("utf-8"))
    wg = h5.create_group("workflows")
    ids = sorted(workflows)
    docs = [msgpack.packb(workflows[i], use_bin_type=True) for i in ids]
    lens = np.array([len(d) for d in docs], np.uint32)
    offs = np.zeros(len(ids), np.uint64)
    if len(ids) > 1:
        offs[1:] = np.cumsum(lens[:-1], dtype=np.uint64)
    wg.create_dataset("id", data=np.array(ids, np.uint64))
    wg.create_dataset("doc_off", data=offs)
    wg.create_dataset("doc_len", data=lens)
    wg.create_dataset("docs", data=np.frombuffer(b"".join(docs), np.uint8))
    keys_arr = np.array(sorted(keys), np.uint64).reshape(-1, 3)
    h5.create_dataset("batches", data=keys_arr, maxshape=(None, 3),
                      chunks=(max(1, min(len(keys_arr), 4096)), 3), compression="gzip")
    return len(ids)
