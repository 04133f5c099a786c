"""Compaction: a job's LMDB store(s) -> one HDF5 archive (docs/archive-format.md).

Pipeline (numpy only, no per-record Python objects):

1. scan every batch of every store under the path (one store per node);
   batches already in the output archive (same batch key) are skipped;
2. per batch: copy the task records, map the batch-local activity ids and
   the node name to ids in one global string table, and append the batch's
   whole payload area to the payload blob (records keep their offsets, moved
   by the blob position) -- the blob is compressed and written while the
   scan goes on, so payload memory stays bounded;
3. drop duplicate tasks by (workflow_id, task_id), sort by start_ns (stable)
   and write one compressed, chunked dataset per column, plus a block index
   of the sorted start times.

Memory: about 200 bytes per task record at the peak (the 84 bytes of
fixed-width columns, the sort permutation, the dedupe hashes and sorted
copies of the time columns; measured 2.0 GB for 10 M records); payloads are
streamed.  With gzip (the default) the
chunks are shuffled and deflated by a thread pool (zlib, or ISA-L's
faster deflate when the optional ``isal`` package is installed; both release
the GIL)
and written with H5Dwrite_chunk, so compaction scales with the cores; lzf
goes through h5py's filter pipeline.

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
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional

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
    recovery: Optional[str] = None

    def describe(self) -> str:
        rate = self.new_records / self.seconds if self.seconds > 0 else 0.0
        out = (f"{self.output}: {self.records} task records ({self.new_records} new"
               + (f", {self.duplicates} duplicates dropped" if self.duplicates else "")
               + (f", {self.skipped_batches} batches already archived" if self.skipped_batches else "")
               + f"), {self.workflows} workflow(s) from {len(self.stores)} store(s); "
               f"{self.bytes / max(self.records, 1):.1f} bytes/record, {self.seconds:.2f} s"
               + (f", {rate / 1e6:.2f} M records/s" if self.new_records else ""))
        if self.recovery:
            out = self.recovery + "\n" + out
        return out


class _Progress:
    """A plain progress bar on stderr."""

    def __init__(self, total: int, enabled: bool, label: str = "compacting"):
        self.total, self.enabled, self.label = max(total, 1), enabled, label
        self.done = self.records = 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, batches: int, records: int, force: bool = False):
        self.done += batches
        self.records += records
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        frac = min(self.done / self.total, 1.0)
        width = 30
        fill = int(frac * width)
        bar = "=" * fill + (">" if fill < width else "") + " " * (width - fill - 1)
        rate = self.records / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}%  {self.records:,} records"
                         f"  {rate / 1e6:.2f} M/s ")
        sys.stderr.flush()

    def message(self, text: str):
        if self.enabled:
            sys.stderr.write(f"\r{text:<80}")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            self.update(0, 0, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


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


def _shuffle(chunk: np.ndarray) -> bytes:
    """The bytes the HDF5 shuffle filter makes of a chunk (byte planes)."""
    isz = chunk.dtype.itemsize
    if isz == 1:
        return chunk.tobytes()
    return chunk.view(np.uint8).reshape(-1, isz).T.tobytes()


class _Writer:
    """Writes datasets with the chosen compression.  gzip: chunks are shuffled and
    deflated in a thread pool and written raw (H5Dwrite_chunk); the output
    is what HDF5's own shuffle+deflate filters would produce."""

    def __init__(self, h5, compression: str, level: int, threads: int):
        self.h5 = h5
        self.compression = compression
        self.level = level
        self.direct = compression == "gzip"
        self.pool = ThreadPoolExecutor(max(threads, 1)) if self.direct else None
        self.inflight: deque = deque()
        self.max_inflight = 4 * max(threads, 1)

    def create(self, name, dtype, n, chunk, shuffle=True):
        dtype = np.dtype(dtype)
        kw = {}
        if self.compression == "gzip":
            kw = dict(compression="gzip", compression_opts=self.level, shuffle=shuffle and dtype.itemsize > 1)
        elif self.compression == "lzf":
            kw = dict(compression="lzf", shuffle=shuffle and dtype.itemsize > 1)
        return self.h5.create_dataset(name, shape=(n,), maxshape=(None,), dtype=dtype,
                                      chunks=(chunk,), **kw)

    def _drain(self, limit):
        while len(self.inflight) > limit:
            ds, off, fut = self.inflight.popleft()
            ds.id.write_direct_chunk((off,), fut.result())

    def write_chunk(self, ds, off: int, make):
        """Writes the chunk at element offset ``off``; ``make()`` returns its data
        (a full chunk unless it is the last one)."""
        if not self.direct:
            data = make()
            ds[off:off + len(data)] = data
            return
        chunk = ds.chunks[0]
        level = self.level
        deflate = _isal.compress if _isal is not None and 1 <= level <= 3 else zlib.compress
        dtype = ds.dtype
        shuffle = ds.shuffle

        def job():
            data = make()
            if len(data) < chunk:   # edge chunks are stored full size
                full = np.zeros(chunk, dtype)
                full[:len(data)] = data
                data = full
            raw = _shuffle(data) if shuffle else data.tobytes()
            return deflate(raw, level)

        self.inflight.append((ds, off, self.pool.submit(job)))
        self._drain(self.max_inflight)

    def column(self, name, source: np.ndarray, order: Optional[np.ndarray], chunk: int):
        """Dataset ``name`` = source[order] (or source), written chunk by chunk."""
        n = len(order) if order is not None else len(source)
        ds = self.create(name, source.dtype, n, chunk)
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            if order is None:
                self.write_chunk(ds, lo, lambda lo=lo, hi=hi: source[lo:hi])
            else:
                self.write_chunk(ds, lo, lambda lo=lo, hi=hi: source[order[lo:hi]])
        return ds

    def flush(self):
        self._drain(0)

    def close(self):
        try:
            self.flush()
        finally:
            if self.pool is not None:
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


class _Columns:
    """Growable contiguous column buffers."""

    def __init__(self, capacity: int):
        self.n = 0
        self.cols = {name: np.empty(max(capacity, 1), dt) for name, _f, dt in columns()}

    def reserve(self, m: int):
        cap = len(self.cols["task_id"])
        if self.n + m > cap:
            new = max(self.n + m, 2 * cap)
            for name, c in self.cols.items():
                grown = np.empty(new, c.dtype)
                grown[:self.n] = c[:self.n]
                self.cols[name] = grown

    def view(self):
        return {name: c[:self.n] for name, c in self.cols.items()}


def _scan_frames(st):
    """(key, frame) of every batch.  For the LMDB store the frames are zero-copy
    views into the memory map, valid until the next item (the caller copies
    what it keeps); other stores go through scan()."""
    yield from st.scan(zero_copy=True)


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


def _dedupe(wf: np.ndarray, tid: np.ndarray, status: np.ndarray) -> Optional[np.ndarray]:
    """Indices to keep (first occurrence of each (workflow_id, task_id), a finished
    record preferred over a RUNNING one), or None when there is no duplicate.
    A 64-bit mix of the key finds candidates; candidates are compared exactly."""
    if len(wf) < 2:
        return None
    h = (wf * np.uint64(0x9E3779B97F4A7C15)) ^ tid
    s = h.copy()
    s.sort()
    dup_h = np.unique(s[1:][s[1:] == s[:-1]])
    if not len(dup_h):
        return None
    cand = np.flatnonzero(np.isin(h, dup_h))
    key = np.zeros(len(cand), dtype=[("wf", "<u8"), ("tid", "<u8")])
    key["wf"], key["tid"] = wf[cand], tid[cand]
    running = (status[cand] == STATUS_RUNNING).astype(np.uint8)
    o = np.lexsort((cand, running, key["tid"], key["wf"]))
    ks = key[o]
    first = np.ones(len(o), bool)
    first[1:] = ks[1:] != ks[:-1]
    drop = cand[o[~first]]
    if not len(drop):
        return None
    keep = np.ones(len(wf), bool)
    keep[drop] = False
    return np.flatnonzero(keep)


def _guess_run_dir(path: str, job: str) -> Optional[str]:
    p = os.path.abspath(path)
    if os.path.basename(p) == job:
        return os.path.dirname(p)
    if os.path.isdir(os.path.join(p, job)):
        return p
    return None


def _load_existing(path: str):
    """Columns, strings, workflows, batch keys and blob dataset name of an archive to merge."""
    from flowcept.archive.hdf5 import Archive
    a = Archive(path)
    cols = {name: a._column(name) for name, _f, _dt in columns()}
    return a, cols


def compact(path: str, out: str, *, recover: Optional[str] = None, run_dir: Optional[str] = None,
            shm_dir: Optional[str] = None, append: bool = True, overwrite: bool = False,
            compression: str = "gzip", level: int = 1, threads: Optional[int] = None,
            progress: Optional[bool] = None, job: Optional[str] = None,
            chunk_rows: int = CHUNK_ROWS) -> CompactReport:
    """Compacts every store under ``path`` (a run, job or store directory) into ``out``.

    recover      job name: first drain what that job left on this node
                 (flowcept.node.recovery.recover_job; run_dir guessed from path)
    append       out exists: merge into it (default); records already there
                 -- same (workflow_id, task_id) -- are not added twice
    overwrite    out exists: replace it instead
    compression  "gzip" (default, level 1, readable by any HDF5), "lzf"
                 (h5py's filter) or "none"
    threads      compression threads (default: CPU count)
    progress     progress bar on stderr (default: when stderr is a TTY)
    job          job name for the records (default: from the store path)
    """
    import h5py
    from flowcept import __version__
    from flowcept.native.batch import Batch, unpack_batch_key
    from flowcept.query.tasks import find_stores
    from flowcept.store import open_store_at

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    if not 0 <= level <= 9:
        raise ValueError(f"compression level {level}: must be between 0 and 9")
    t0 = time.perf_counter()
    out = os.fspath(out)
    report = CompactReport(output=out)
    if recover:
        from flowcept.node.recovery import recover_job
        rr = recover_job(recover, run_dir=run_dir or _guess_run_dir(path, recover), shm_dir=shm_dir)
        report.recovery = rr.describe()
        if not rr.ok:
            raise ArchiveError(f"recovery of job {recover} failed: {rr.describe()}")
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
        existing, old_cols = _load_existing(out)

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
                _write(h5, writer, stores, existing, old_cols if existing else None, report,
                       progress, job, chunk_rows, h5py, Batch, unpack_batch_key, open_store_at)
                writer.flush()
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
                        + [os.path.abspath(s) for s in stores]))),
                    "record_count": report.records,
                    "workflow_count": report.workflows,
                    "sort_key": "start_ns",
                    "index_block_rows": int(h5["index"].attrs["block_rows"]),
                    "compression": compression,
                    "record_dtype": json.dumps([[n, RECORD_DTYPE.fields[n][0].str]
                                                for n in RECORD_DTYPE.names]),
                    "columns": json.dumps([[n, dt] for n, _f, dt in columns()]),
                }
                meta["job"] = ",".join(json.loads(h5["tasks"].attrs["jobs"]))
                for k, v in meta.items():
                    h5.attrs[k] = v
            finally:
                writer.close()
        if existing is not None:
            existing.close()
            existing = None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
        dfd = os.open(out_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
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


def _write(h5, writer, stores, existing, old_cols, report, progress, job_override, chunk_rows,
           h5py, Batch, unpack_batch_key, open_store_at):
    import msgpack
    strings = _Strings(existing.strings.tolist() if existing is not None else ())
    payloads = _Blob(writer, "payloads")
    known_keys = set()
    workflows: Dict[int, dict] = {}
    n_old = len(old_cols["task_id"]) if old_cols is not None else 0
    if existing is not None:
        src = existing._h5["payloads"]
        if not payloads.copy_raw_chunks(src):
            for lo in range(0, src.shape[0], 16 * BLOB_CHUNK):
                payloads.append(src[lo:lo + 16 * BLOB_CHUNK])
        known_keys = {tuple(k) for k in existing._h5["batches"][()].tolist()}
        workflows = {int(k): dict(v) for k, v in existing.workflows_by_id().items()}

    total_batches = expect = 0
    for sp in stores:
        with open_store_at(sp) as st:
            for _k, summ in st.summaries():
                total_batches += 1
                expect += int(summ.get("n", 0))
    bar = _Progress(total_batches, progress)
    buf = _Columns(n_old + expect)
    if old_cols is not None:
        for name, c in buf.cols.items():
            c[:n_old] = old_cols[name]
        buf.n = n_old
    fields = [(name, fld) for name, fld, _dt in columns()
              if fld is not None and fld not in ("activity_id", "payload_off")]
    keys_out = list(known_keys)
    jobs_seen = []
    try:
        for sp in stores:
            with open_store_at(sp) as st:
                store_wfs = st.workflows()
                job_name = job_override or _job_of_store(sp, store_wfs)
                if job_name not in jobs_seen:
                    jobs_seen.append(job_name)
                job_id = strings.id(job_name)
                for wf, doc in store_wfs.items():
                    workflows.setdefault(wf, {}).update(doc)
                for key, frame in _scan_frames(st):
                    report.batches += 1
                    k = unpack_batch_key(key)
                    if k in known_keys:
                        report.skipped_batches += 1
                        bar.update(1, 0)
                        continue
                    keys_out.append(k)
                    b = Batch(frame, check=False)
                    recs = b.records
                    tasks = (recs["flags"] & FLAG_WORKFLOW) == 0
                    if not tasks.all():
                        recs = recs[tasks]
                    m = len(recs)
                    if not m:
                        bar.update(1, 0)
                        continue
                    names = b.strings
                    node = names[0][len(NODE_PREFIX):] if names and names[0].startswith(NODE_PREFIX) else ""
                    lut = np.array([strings.id(x) for x in names] + [strings.id("")], np.uint32)
                    base = payloads.append(b.payload)
                    buf.reserve(m)
                    lo, hi = buf.n, buf.n + m
                    c = buf.cols
                    for name, fld in fields:
                        c[name][lo:hi] = recs[fld]
                    np.take(lut, np.minimum(recs["activity_id"], len(lut) - 1), out=c["activity"][lo:hi])
                    np.add(recs["payload_off"], np.uint64(base), out=c["payload_off"][lo:hi],
                           casting="unsafe")
                    c["node"][lo:hi] = strings.id(node)
                    c["job"][lo:hi] = job_id
                    buf.n = hi
                    bar.update(1, m)
        payloads.close()
    finally:
        bar.close()
    cols = buf.view()
    n_all = buf.n

    # dedupe and sort, concurrently (numpy sorts release the GIL)
    pool = writer.pool or ThreadPoolExecutor(1)
    try:
        fut_keep = pool.submit(_dedupe, cols["workflow_id"], cols["task_id"], cols["status"])
        order = np.argsort(cols["start_ns"], kind="stable")
        keep = fut_keep.result()
    finally:
        if writer.pool is None:
            pool.shutdown()
    if keep is not None:
        mask = np.zeros(n_all, bool)
        mask[keep] = True
        order = order[mask[order]]
    n = len(order)
    report.records = n
    report.new_records = n - n_old
    report.duplicates = n_all - n
    if n == n_all and n and np.all(order[1:] > order[:-1]):
        order = None            # already in order
    start = cols["start_ns"][order] if order is not None else cols["start_ns"]
    end = cols["end_ns"][order] if order is not None else cols["end_ns"]

    chunk = max(1, min(chunk_rows, n)) if n else chunk_rows
    g = h5.create_group("tasks")
    old_jobs = json.loads(existing._h5["tasks"].attrs.get("jobs", "[]")) if existing is not None else []
    g.attrs["jobs"] = json.dumps(list(dict.fromkeys(old_jobs + jobs_seen)))
    for name, _f, _dt in columns():
        if name == "start_ns":
            writer.column(f"tasks/{name}", start, None, chunk)
        elif name == "end_ns":
            writer.column(f"tasks/{name}", end, None, chunk)
        else:
            writer.column(f"tasks/{name}", cols[name], order, chunk)

    # block index over the sorted start times
    lo = np.arange(0, n, chunk)
    ig = h5.create_group("index")
    ig.attrs["block_rows"] = chunk
    if n:
        ig.create_dataset("start_min", data=start[lo])
        ig.create_dataset("start_max", data=start[np.minimum(lo + chunk, n) - 1])
        ig.create_dataset("end_max", data=np.maximum.reduceat(end, lo))
    else:
        for nm in ("start_min", "start_max", "end_max"):
            ig.create_dataset(nm, shape=(0,), dtype="<i8")

    # strings, workflows, batch keys
    h5.create_dataset("strings", data=np.array(strings.items, dtype=object),
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
    report.workflows = len(ids)
    keys_arr = np.array(sorted(keys_out), np.uint64).reshape(-1, 3)
    h5.create_dataset("batches", data=keys_arr, maxshape=(None, 3),
                      chunks=(max(1, min(len(keys_arr), 4096)), 3), compression="gzip")
