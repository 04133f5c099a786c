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
from typing import Callable, Dict, List, Optional

import numpy as np

try:  # ISA-L deflate: same zlib streams, several times faster (optional)
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None

from flowcept.archive.format import BLOB_CHUNK, COLS, Parts, address


class Writer:
    """Writes datasets with the chosen compression.  gzip: chunks are made (gathered,
    shuffled) and deflated in a thread pool and written raw (H5Dwrite_chunk), in the order
    they were handed over; the output is what HDF5's own shuffle+deflate filters would
    produce.  The chunks in flight hold at most ``inflight_bytes`` (uncompressed; at
    least one job), which bounds their memory."""

    def __init__(self, h5, compression: str, level: int, threads: int, inflight_bytes: int):
        self.h5 = h5
        self.compression = compression
        self.level = level
        self.direct = compression == "gzip"
        self.pool = ThreadPoolExecutor(max(threads, 1)) if self.direct else None
        self.owns_pool = True
        self.inflight: deque = deque()
        self.held = 0
        self.max_bytes = inflight_bytes

    def sibling(self) -> "Writer":
        """A writer for another thread: the same file and compression pool, its own chunks
        in flight."""
        w = Writer.__new__(Writer)
        w.h5, w.compression, w.level, w.direct = self.h5, self.compression, self.level, self.direct
        w.pool, w.owns_pool = self.pool, False
        w.inflight, w.held, w.max_bytes = deque(), 0, self.max_bytes
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

    def _drain(self, limit_bytes: int):
        while self.inflight and (self.held > limit_bytes or not limit_bytes):
            if limit_bytes and len(self.inflight) == 1:
                break
            dss, off, size, fut = self.inflight.popleft()
            for ds, raw in zip(dss, fut.result()):
                ds.id.write_direct_chunk((off,), raw)
            self.held -= size

    def write_chunks(self, dss: list, off: int, size: int, make: Callable[[bool], list],
                     done: Optional[Callable[[list], None]] = None):
        """Writes the chunk at element offset ``off`` of each dataset of ``dss`` (``size``:
        their bytes, uncompressed).  ``make(direct)`` returns their data: direct (gzip, in
        the pool), the bytes HDF5's filters deflate -- the whole chunk, zeros past the
        data (edge chunks are stored full size), in byte planes when the dataset has the
        shuffle filter; else the rows themselves, for h5py to write.  ``done(data)`` is
        called once the data is no longer needed (its buffers can be used again)."""
        if not self.direct:
            data = make(False)
            for ds, d in zip(dss, data):
                ds[off:off + len(d)] = d
            if done is not None:
                done(data)
            return
        level = self.level
        deflate = _isal.compress if _isal is not None and 1 <= level <= 3 else zlib.compress

        def job():
            data = make(True)
            out = [deflate(a, level) for a in data]
            if done is not None:
                done(data)
            return out

        self.inflight.append((dss, off, size, self.pool.submit(job)))
        self.held += size
        self._drain(self.max_bytes)

    def write_chunk(self, ds, off: int, size: int, make: Callable[[bool], np.ndarray],
                    done: Optional[Callable[[list], None]] = None):
        """write_chunks of one dataset."""
        self.write_chunks([ds], off, size, lambda direct: [make(direct)], done)

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
        self.spare: deque = deque()    # chunk buffers the pool is done with (no new pages)
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
        if self.fill < BLOB_CHUNK:
            self.cur[self.fill:] = 0
        data, fill = self.cur, self.fill
        self.w.write_chunk(self.ds, self.flushed, BLOB_CHUNK,
                           lambda direct: data if direct else data[:fill],
                           lambda _used: self.spare.append(data))
        self.flushed += BLOB_CHUNK
        self.cur = self.spare.popleft() if self.spare else np.empty(BLOB_CHUNK, np.uint8)
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


class TaskColumns:
    """The /tasks columns and the /index, written chunk by chunk from merged rows: each
    chunk of each column is gathered from the merge's blocks by the merged order (and
    shuffled, in C) inside the compression pool, in parallel; rows are not copied before."""

    def __init__(self, writer: Writer, expect: int, chunk: int):
        self.w = writer
        self.chunk = chunk
        self.ds = {name: writer.column(name, dt, max(expect, 0), chunk) for name, dt in COLS}
        self.pending: list = []        # pieces of the chunk being filled
        self.fill = 0
        self.n = 0
        self.last_key = 0
        self.start_min: List[int] = []
        self.start_max: List[int] = []
        self.end_max: List[Optional[int]] = []
        self.spare: deque = deque()    # sets of chunk buffers the pool is done with

    def append(self, parts: Parts, order: np.ndarray, keys: np.ndarray):
        """Appends the rows ``order`` names in ``parts`` (a merged order: uint64, part <<
        ROW_BITS | row), ``keys`` their start times."""
        n = len(order)
        if not n:
            return
        oaddr = address(order)
        pos = 0
        while pos < n:
            take = min(self.chunk - self.fill, n - pos)
            if not self.fill:
                self.start_min.append(int(keys[pos]))
            self.pending.append((parts, order, oaddr + 8 * pos, take))
            self.fill += take
            pos += take
            if self.fill == self.chunk:
                self.last_key = int(keys[pos - 1])
                self._emit()
        self.last_key = int(keys[n - 1])

    def _emit(self):
        from flowcept.native import columns as nc
        pieces, m = self.pending, self.fill
        self.pending, self.fill = [], 0
        off = self.n
        if self.ds["task_id"].shape[0] < off + m:
            size = max(off + m, 2 * self.ds["task_id"].shape[0])
            for ds in self.ds.values():
                ds.resize((size,))
        self.start_max.append(self.last_key)
        slot = len(self.end_max)
        self.end_max.append(None)
        # the rows: each piece's order and parts; the columns: each one's arrays in the
        # parts, piece after piece
        plan = np.zeros(len(pieces), nc.PIECE_DTYPE)
        plan["lens"] = [p.lens_addr for p, _o, _a, _n in pieces]
        plan["order"] = [a for _p, _o, a, _n in pieces]
        plan["n"] = [n for _p, _o, _a, n in pieces]
        plan["nparts"] = [p.k for p, _o, _a, _n in pieces]
        ncols = len(self.ds)
        table = np.ascontiguousarray(np.concatenate([p.table[:ncols] for p, _o, _a, _n in pieces], axis=1))
        dss = list(self.ds.values())
        items = np.array([ds.dtype.itemsize for ds in dss], np.uint32)
        shuffle = np.array([nc.SHUFFLE if ds.shuffle else 0 for ds in dss], np.uint32)
        end_col = list(self.ds).index("end_ns")
        chunk, end_max, spare = self.chunk, self.end_max, self.spare

        def make(direct, keep=pieces):
            rows = chunk if direct else m
            outs = None
            if direct:
                try:
                    outs = spare.popleft()
                except IndexError:
                    pass
            if outs is None:
                outs = [np.empty(rows * int(isz), np.uint8) for isz in items]
            cols = np.zeros(ncols, nc.COLUMN_DTYPE)
            cols["bases"] = address(table) + np.arange(ncols, dtype=np.uint64) * np.uint64(table.shape[1] * 8)
            cols["out"] = [address(o) for o in outs]
            cols["itemsize"] = items
            cols["flags"] = shuffle if direct else 0
            cols["flags"][end_col] |= nc.MAX
            nc.gather_at(plan, cols, rows)
            end_max[slot] = int(cols["max"][end_col])
            return outs if direct else [o.view(ds.dtype) for o, ds in zip(outs, dss)]
        self.w.write_chunks(dss, off, m * int(items.sum()), make,
                            lambda used: spare.append(used) if self.w.direct else None)
        self.n += m

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
