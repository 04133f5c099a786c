"""Reading an archive: ``flowcept.archive.open(path)`` -> :class:`Archive`.

Columns are read from the file on first use and kept in memory; payloads
(used/generated/tags/...) are decoded on demand.  Queries take Mongo-style
filters and return a :class:`Selection` (indices into the archive, in
archive order = start time order).

Filter fields (a value or ``{"$op": value, ...}``; ops $eq $ne $gt $gte $lt
$lte $in $nin, on payload fields also $exists and $regex; top-level
$and/$or/$nor lists).  Evaluated by the one filter engine
(flowcept.query.filters.mask) over this archive's columns:

=====================  ======================================================
task_id                "<wf hex>-<task hex>" (as in task dicts) or the raw int
parent_task_id         same, or None for top-level tasks
workflow_id            16 hex digits or the raw int
activity_id/activity   activity name (strings compare as strings)
hostname/node, job     node name, job name
status                 "FINISHED" / "ERROR" / "RUNNING" or the code 0/1/2;
                       ordering compares codes
rank, thread_id,       integers
flags, payload_len
start_ns, end_ns       integer nanoseconds since the epoch
started_at, ended_at   float seconds since the epoch (start_ns / 1e9)
duration               float seconds
tags                   a task's tag list: {"tags": "x"} matches when x is in it
used.K, generated.K,   a value in the decoded payload (dotted path); a missing
custom_metadata.K      field matches only $ne/$nin/$eq None, like MongoDB
=====================  ======================================================

Types are compared like MongoDB does: numbers with numbers, strings with
strings, booleans with booleans; a comparison across types never matches
($ne/$nin then match).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from flowcept.archive import ARCHIVE_VERSION, MAGIC, ArchiveError, columns
from flowcept.archive.lineage import Lineage
from flowcept.query.documents import documents
from flowcept.query.engine import Ref, Table
from flowcept.query.filters import MISSING, Columns, as_list, is_number, mask, match_value
from flowcept.query.frames import BLOCK_COLUMNS, Block, LazyColumns
from flowcept.query.lineage import LineageIndex
from flowcept.query.prune import batch_may_match
from flowcept.record.layout import STATUS_ERROR, STATUS_NAMES, format_task_id, parse_task_id
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD, NAME_MAX

STATUS_CODES = {v: k for k, v in STATUS_NAMES.items()}
_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")

_INT_FIELDS = {"rank": "rank", "thread_id": "thread_id", "flags": "flags",
               "payload_len": "payload_len", "start_ns": "start_ns", "end_ns": "end_ns"}
_FLOAT_FIELDS = ("started_at", "ended_at", "duration")
_STRING_FIELDS = {"activity_id": "activity", "activity": "activity", "hostname": "node",
                  "node": "node", "job": "job"}
_ID_FIELDS = ("task_id", "parent_task_id", "workflow_id")
_PAYLOAD_ROOTS = ("tags", "used", "generated", "custom_metadata", "error", "payload")


def _to_seconds(t) -> float:
    """Epoch seconds of a float/int (seconds), datetime, numpy datetime64 or ISO string."""
    if isinstance(t, datetime):
        return t.timestamp()
    if isinstance(t, np.datetime64):
        return t.astype("datetime64[ns]").astype(np.int64) / 1e9
    if isinstance(t, str):
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return d.timestamp()
    if is_number(t):
        return float(t)
    raise TypeError(f"not a time: {t!r} (use epoch seconds, a datetime or an ISO 8601 string)")


def _first_ns_at(t: float) -> int:
    """The smallest integer ns with ns / 1e9 >= t, so that time ranges agree with
    comparisons on started_at (= start_ns / 1e9, a float)."""
    ns = int(t * 1e9)
    step = 1 << 10
    while ns / 1e9 < t:
        ns += step
    while step:
        while (ns - step) / 1e9 >= t:
            ns -= step
        step >>= 1
    return ns


def _vec_cmp(vals: np.ndarray, op: str, v) -> np.ndarray:
    if op == "$eq":
        return vals == v
    if op == "$ne":
        return vals != v
    if op == "$gt":
        return vals > v
    if op == "$gte":
        return vals >= v
    if op == "$lt":
        return vals < v
    return vals <= v


_FILTER_DEFLATE, _FILTER_SHUFFLE = 1, 2


def read_dataset(ds) -> np.ndarray:
    """The whole 1-D dataset.  Chunks compressed with (shuffle+)deflate are read raw
    and decoded in a thread pool (ISA-L's inflate when installed), several
    times faster than HDF5's serial filter pipeline; anything else is read by
    h5py."""
    n = ds.shape[0] if ds.ndim == 1 else 0
    chunks = ds.chunks
    if ds.ndim != 1 or not chunks or n < 4 * chunks[0] or ds.dtype.kind not in "iuf":
        return ds[()]
    plist = ds.id.get_create_plist()
    pipeline = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if not pipeline or any(f not in (_FILTER_DEFLATE, _FILTER_SHUFFLE) for f in pipeline):
        return ds[()]
    try:
        from isal import isal_zlib as z
    except ImportError:  # pragma: no cover - optional accelerator
        import zlib as z
    from concurrent.futures import ThreadPoolExecutor
    c = chunks[0]
    dt = ds.dtype
    isz = dt.itemsize
    out = np.empty(n, dt)
    raw_out = out.view(np.uint8)

    def decode(off, mask, raw):
        data = raw
        for k in range(len(pipeline) - 1, -1, -1):
            if mask >> k & 1:
                continue
            if pipeline[k] == _FILTER_DEFLATE:
                data = z.decompress(data)
            elif isz > 1:
                data = np.frombuffer(data, np.uint8).reshape(isz, -1).T.tobytes()
        m = min(c, n - off)
        if len(data) < m * isz:
            raise ValueError(f"chunk at {off}: {len(data)} bytes decoded, {m * isz} expected")
        raw_out[off * isz:(off + m) * isz] = np.frombuffer(data, np.uint8, count=m * isz)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        futs = []
        for off in range(0, n, c):
            mask, raw = ds.id.read_direct_chunk((off,))
            futs.append(pool.submit(decode, off, mask, raw))
        for f in futs:
            f.result()
    return out


class PayloadChunks:
    """The /payloads blob read by chunk: each 1 MiB chunk a row needs is
    read and inflated once and kept (least recently used first out, at most
    ``cache_bytes``), so the payloads of a block of rows cost one read per
    chunk, not one per row."""

    def __init__(self, ds, cache_bytes: int = 256 << 20, whole: Optional[np.ndarray] = None):
        import threading
        from collections import OrderedDict
        self.ds = ds
        self.whole = whole
        self.size = ds.shape[0]
        self.chunk = (ds.chunks or (self.size or 1,))[0]
        self.cap = max(1, cache_bytes // max(1, self.chunk))
        self.cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self.lock = threading.Lock()   # the cache only: held for bookkeeping, never for a read
        plist = ds.id.get_create_plist() if ds.chunks else None
        self.pipeline = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] if plist else None
        self.raw_ok = bool(ds.chunks) and all(f in (_FILTER_DEFLATE, _FILTER_SHUFFLE)
                                              for f in (self.pipeline or []))

    def _chunk(self, k: int) -> bytes:
        with self.lock:
            c = self.cache.get(k)
            if c is not None:
                self.cache.move_to_end(k)
                return c
        lo = k * self.chunk
        hi = min(self.size, lo + self.chunk)
        if self.raw_ok:
            mask, raw = self.ds.id.read_direct_chunk((lo,))
            data = raw
            for j in range(len(self.pipeline) - 1, -1, -1):
                if not mask >> j & 1 and self.pipeline[j] == _FILTER_DEFLATE:
                    data = _inflate(data)
            c = bytes(data[:hi - lo])
        else:
            c = self.ds[lo:hi].tobytes()
        with self.lock:
            self.cache[k] = c
            while len(self.cache) > self.cap:
                self.cache.popitem(last=False)
        return c

    def read(self, offs, lens) -> List[bytes]:
        """Bytes [off, off + len) of each row: the rows within one chunk are
        sliced from it together (a chunk is read and inflated once)."""
        offs = np.asarray(offs, np.int64)
        lens = np.asarray(lens, np.int64)
        if self.whole is not None:
            w = self.whole
            return [w[o:o + n].tobytes() if n else b"" for o, n in zip(offs.tolist(), lens.tolist())]
        out: List[bytes] = [b""] * len(offs)
        C = self.chunk
        k0 = offs // C
        k1 = (offs + np.maximum(lens, 1) - 1) // C
        one = (k0 == k1) & (lens > 0)
        if one.any():
            sel = np.flatnonzero(one)
            order = sel[np.argsort(k0[sel], kind="stable")]
            ks = k0[order]
            cuts = np.flatnonzero(np.diff(ks)) + 1
            for grp in np.split(order, cuts):
                k = int(k0[grp[0]])
                c = self._chunk(k)
                base = k * C
                for j, o, n in zip(grp.tolist(), (offs[grp] - base).tolist(), lens[grp].tolist()):
                    out[j] = c[o:o + n]
        for j in np.flatnonzero(~one & (lens > 0)).tolist():
            o, n = int(offs[j]), int(lens[j])
            blob = b"".join(self._chunk(k) for k in range(o // C, (o + n - 1) // C + 1))
            out[j] = blob[o - (o // C) * C:o - (o // C) * C + n]
        return out


def _inflate(data: bytes) -> bytes:
    try:
        from isal import isal_zlib as z
    except ImportError:  # pragma: no cover - optional accelerator
        import zlib as z
    return z.decompress(data)


class Selection:
    """Tasks picked from an archive: ``indices`` (archive rows), ``tasks`` (the
    sub-table), iteration and ``[k]`` give Flowcept-style task dicts."""

    def __init__(self, archive: "Archive", indices):
        self.archive = archive
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __array__(self, dtype=None, copy=None):
        return self.indices if dtype is None else self.indices.astype(dtype)

    def __iter__(self):
        for i in self.indices.tolist():
            yield self.archive.task(i)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Selection(self.archive, self.indices[k])
        return self.archive.task(int(self.indices[k]))

    def __repr__(self):
        return f"<Selection of {len(self)} task(s) from {self.archive.path}>"

    @property
    def tasks(self) -> np.ndarray:
        return self.archive.tasks[self.indices]

    def to_list(self) -> List[dict]:
        return list(self)

    def to_pandas(self):
        return self.archive.to_pandas(self.indices)

    def query(self, filter: Optional[dict] = None, **kw) -> "Selection":
        """Narrows this selection with the same arguments as Archive.query."""
        return self.archive.query(filter, _rows=self.indices, **kw)

    def task_ids(self) -> List[str]:
        a = self.archive
        wf, tid = a._column("workflow_id")[self.indices], a._column("task_id")[self.indices]
        return [format_task_id(w, t) for w, t in zip(wf.tolist(), tid.tolist())]


class Archive:
    """An open archive.  Use as a context manager or call close()."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            import h5py
        except ImportError as e:  # pragma: no cover - h5py is in the hdf5 extra
            raise ImportError("reading flowcept archives needs h5py: pip install 'flowcept[hdf5]'") from e
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such archive")
        try:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=64 << 20, rdcc_nslots=10007)
        except OSError as e:
            size = os.path.getsize(self.path)
            raise ArchiveError(f"{self.path}: not a readable HDF5 file ({size} bytes; truncated, "
                               f"corrupt or not HDF5): {e}") from None
        try:
            self._validate()
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
            self._h5.close()
            if isinstance(e, ArchiveError):
                raise
            raise ArchiveError(f"{self.path}: damaged archive (corrupt HDF5 metadata): {e}") from None
        except BaseException:
            self._h5.close()
            raise
        self._cols: Dict[str, np.ndarray] = {}
        self._tasks = None
        self._payload_cache: Optional[np.ndarray] = None
        self._payload_chunks: Optional[PayloadChunks] = None
        self._named = None            # rows whose names ride in their payloads (resolved once)
        self._str_array = None
        self.column_cache_bytes = 2 << 30   # whole columns kept in memory up to this
        self._decoded: Dict[int, Any] = {}
        # payloads flagged msgpack that do not decode (kept as raw bytes)
        self.payload_errors = 0
        self._lineage = None
        self._walks = None

    # -- opening ---------------------------------------------------------------------------

    def _validate(self):
        h = self._h5
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h.attrs.items()}
        fmt = attrs.get("format")
        if fmt != MAGIC:
            raise ArchiveError(f"{self.path}: not a flowcept archive (root attribute 'format' is "
                               f"{fmt!r}, expected {MAGIC!r})")
        ver = attrs.get("format_version")
        try:
            ver = int(ver)
        except (TypeError, ValueError):
            raise ArchiveError(f"{self.path}: format_version {ver!r} is not a version number") from None
        if ver > ARCHIVE_VERSION:
            raise ArchiveError(
                f"{self.path}: archive format version {ver} is newer than this flowcept "
                f"({_version()}) reads (up to {ARCHIVE_VERSION}); upgrade flowcept to read it "
                "(pip install -U flowcept)")
        if ver < 1:
            raise ArchiveError(f"{self.path}: archive format version {ver} is not valid "
                               f"(versions 1..{ARCHIVE_VERSION} are known)")
        self.version = ver
        self.attrs = attrs
        need = [f"tasks/{n}" for n, _f, _dt in columns()] + [
            "strings", "payloads", "workflows/id", "workflows/docs", "workflows/doc_off",
            "workflows/doc_len", "batches"]
        missing = [n for n in need if n not in h]
        if missing:
            raise ArchiveError(f"{self.path}: damaged archive, missing dataset(s) {', '.join(missing)}")
        n = attrs.get("record_count")
        lens = {name: h[f"tasks/{name}"].shape[0] for name, _f, _dt in columns()}
        if len(set(lens.values())) != 1 or (n is not None and int(n) != next(iter(lens.values()))):
            raise ArchiveError(f"{self.path}: damaged archive, column lengths differ "
                               f"({lens}, record_count {n})")
        self.n = next(iter(lens.values()))
        try:
            self.strings = np.array(h["strings"].asstr()[()], dtype=object)
        except (OSError, UnicodeDecodeError) as e:
            raise ArchiveError(f"{self.path}: damaged string table: {e}") from None

    def close(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.n

    def __repr__(self):
        return (f"<flowcept Archive {self.path}: {self.n} tasks, job {self.attrs.get('job', '')!r}, "
                f"format {self.version}>")

    def _read(self, name: str):
        try:
            ds = self._h5[name]
            out = read_dataset(ds)
        except Exception as e:  # h5py errors, zlib errors of damaged chunks
            if isinstance(e, ArchiveError):
                raise
            raise ArchiveError(f"{self.path}: cannot read dataset {name!r} (corrupt?): {e}") from None
        return out

    def _column(self, name: str) -> np.ndarray:
        """A /tasks column as stored (ids for activity/node/job)."""
        c = self._cols.get(name)
        if c is None:
            c = self._cols[name] = self._read(f"tasks/{name}")
        return c

    @property
    def jobs(self) -> List[str]:
        return json.loads(self._h5["tasks"].attrs.get("jobs", "[]"))

    # -- tables ----------------------------------------------------------------------------

    @property
    def tasks(self) -> np.ndarray:
        """All tasks as a numpy structured array, in start time order: the record
        fields (activity_id = id into .strings, payload_off into /payloads),
        node_id, job_id, duration_ns, and the names activity, node, job."""
        if self._tasks is None:
            cols = columns()
            names = [(("activity_id" if n == "activity" else f"{n}_id" if f is None else n), n, dt)
                     for n, f, dt in cols]
            strs = self.strings.astype(str) if len(self.strings) else np.zeros(0, "U1")
            width = max(1, max((len(s) for s in strs), default=1))
            dt = [(out, d) for out, _n, d in names] + [("duration_ns", "<i8")] + [
                ("activity", f"U{width}"), ("node", f"U{width}"), ("job", f"U{width}")]
            t = np.zeros(self.n, dt)
            for out, n, _d in names:
                t[out] = self._column(n)
            t["duration_ns"] = self._column("end_ns").astype(np.int64) - self._column("start_ns")
            table = np.array(strs, dtype=f"U{width}")
            for nm in ("activity", "node", "job"):
                t[nm] = table[self._column(nm)] if len(table) else ""
            self._tasks = t
        return self._tasks

    def to_pandas(self, indices=None, payload: bool = True):
        """The tasks (or the given rows) as a pandas DataFrame with the task
        documents' field names (task_id, workflow_id, parent_task_id,
        activity_id, status, started_at, ended_at, start_ns, end_ns, rank,
        thread_id, hostname, then used, generated, tags, custom_metadata,
        error unless ``payload`` is False), as ``flowcept.read_tasks`` and
        ``Flowcept.db.to_df`` name them.  The archive's own integer columns
        are in ``Archive.tasks``."""
        from flowcept.query.documents import columns as doc_columns, concat_columns, dataframe
        rows = np.arange(self.n) if indices is None else np.asarray(indices, np.int64)
        mode = "objects" if payload else "none"
        parts = []
        B = 1 << 16
        for k in range(0, len(rows), B):
            part = rows[k:k + B]
            if not len(part):
                continue
            lo, hi = int(part.min()), int(part.max()) + 1
            parts.append(doc_columns(self.block(lo, hi), part - lo, mode))
        return dataframe(concat_columns(parts, mode))

    # -- payloads and task dicts -----------------------------------------------------------

    def payload_chunks(self) -> PayloadChunks:
        """The payload blob, read by chunk (whole when already loaded)."""
        if self._payload_chunks is None:
            try:
                self._payload_chunks = PayloadChunks(self._h5["payloads"], whole=self._payload_cache)
            except (OSError, KeyError, RuntimeError) as e:
                raise ArchiveError(f"{self.path}: cannot read the payloads: {e}") from None
        return self._payload_chunks

    def payload_bytes(self, i: int) -> bytes:
        """The stored payload bytes of row i (as written: a name prefix, if any, included)."""
        off = int(self._column("payload_off")[i])
        n = int(self._column("payload_len")[i])
        if not n:
            return b""
        try:
            return self.payload_chunks().read([off], [n])[0]
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ArchiveError(f"{self.path}: cannot read payload of task {i}: {e}") from None

    def _load_payloads(self):
        if self._payload_cache is None:
            self._payload_cache = self._read("payloads")
            self._payload_chunks = None
        return self._payload_cache

    # -- blocks: the read path's view of the archive ----------------------------------------

    def _range(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of a /tasks column: a slice of the whole column when it
        is in memory or fits the column cache (read once, chunks inflated in
        parallel), else read by chunk from the file."""
        c = self._cols.get(name)
        if c is None:
            ds = self._h5[f"tasks/{name}"]
            held = sum(v.nbytes for v in self._cols.values())
            if held + ds.shape[0] * ds.dtype.itemsize <= self.column_cache_bytes:
                c = self._column(name)
            else:
                try:
                    return ds[lo:hi]
                except Exception as e:
                    raise ArchiveError(f"{self.path}: cannot read dataset tasks/{name} (corrupt?): "
                                       f"{e}") from None
        return c[lo:hi]

    def _named_rows(self):
        """(rows, activity codes, payload offsets, lengths) of the rows whose
        activity name rides in front of their payload (their ring's name table
        was full): the names join the string table (``read_strings``)."""
        if self._named is None:
            flags = self._column("flags")
            rows = np.flatnonzero(flags & FLAG_NAME_IN_PAYLOAD)
            strings = self.strings.tolist()
            index = {x: i for i, x in enumerate(strings)}
            act = self._column("activity")[rows].astype(np.uint32)
            offs = self._column("payload_off")[rows].astype(np.uint64)
            lens = self._column("payload_len")[rows].astype(np.uint32)
            if len(rows):
                for j, data in enumerate(self.payload_chunks().read(offs, lens)):
                    if len(data) < 2:
                        continue
                    k = data[0] | data[1] << 8
                    if k > NAME_MAX or 2 + k > len(data):
                        continue
                    name = data[2:2 + k].decode("utf-8", "replace")
                    code = index.get(name)
                    if code is None:
                        code = index[name] = len(strings)
                        strings.append(name)
                    act[j] = code
                    offs[j] += 2 + k
                    lens[j] -= 2 + k
            self._named = (rows, act, offs, lens, strings)
            self._str_array = None
        return self._named

    def activity_codes(self) -> np.ndarray:
        """The activity column with the names that rode in payloads resolved
        (codes into ``read_strings``)."""
        rows, act, _o, _l, _s = self._named_rows()
        col = self._column("activity")
        if len(rows):
            col = col.copy()
            col[rows] = act
        return col

    @property
    def read_strings(self) -> list:
        """The string table with the names that rode in payloads appended."""
        return self._named_rows()[4]

    def _string_array(self) -> np.ndarray:
        if self._str_array is None:
            strs = self.read_strings
            self._str_array = np.array(strs + [""], dtype=object)[:-1]
        return self._str_array

    def block(self, lo: int, hi: int) -> Block:
        """Rows [lo, hi) as a read-path block (columns read on first use)."""
        lo, hi = max(0, int(lo)), min(self.n, int(hi))
        rows, act, offs, lens, strings = self._named_rows()
        a, b = np.searchsorted(rows, [lo, hi])
        sub = rows[a:b] - lo

        def load(name):
            if name == "node":
                return self._range("node", lo, hi)
            src = "activity" if name == "activity" else name
            col = self._range(src, lo, hi)
            if len(sub) and name in ("activity", "payload_off", "payload_len", "flags"):
                col = col.copy()
                if name == "activity":
                    col[sub] = act[a:b]
                elif name == "payload_off":
                    col[sub] = offs[a:b]
                elif name == "payload_len":
                    col[sub] = lens[a:b]
                else:
                    col[sub] &= ~np.uint16(FLAG_NAME_IN_PAYLOAD)
            return col
        return Block(LazyColumns(load, BLOCK_COLUMNS), strings, self.payload_chunks(),
                     key=("rows", lo, hi), base=lo, n=hi - lo, str_array=self._string_array())

    def table(self, block_rows: Optional[int] = None) -> "ArchiveTable":
        """The archive as a read-path table (``flowcept.query.engine``)."""
        return ArchiveTable(self, block_rows)

    def _flags(self, i: int) -> int:
        from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK
        try:
            return int(self._column("flags")[i])
        except (ArchiveError, KeyError, IndexError):
            return FLAG_PAYLOAD_MSGPACK

    def _decode_payload(self, i: int, data: bytes) -> Any:
        """Task i's payload as its flags say: decoded msgpack, or the raw
        bytes (C API payloads; and, counted in payload_errors, a payload
        flagged msgpack that does not decode).  Never raises.  A name prefix
        (FLAG_NAME_IN_PAYLOAD) still in front of it is stripped."""
        from flowcept.record.payload import decode_or_raw, split_name
        flags = self._flags(i)
        _, data = split_name(data, flags)
        if not data:
            return {}
        d, ok = decode_or_raw(data, flags)
        if not ok:
            self.payload_errors += 1
        return d

    def payload(self, i) -> Any:
        """The payload (dict with used/generated/tags/...) of task i, decoded
        when its flags say msgpack; raw bytes otherwise or when it does not
        decode (counted in ``payload_errors``)."""
        i = self._index(i)
        d = self._decoded.get(i, MISSING)
        if d is MISSING:
            d = self._decoded[i] = self._decode_payload(i, self.payload_bytes(i))
        return d

    def decoded_payloads(self, rows=None) -> List[Any]:
        """Payloads of many rows at once (the blob is read once), as payload()."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows, np.int64)
        want = [i for i in rows.tolist() if i not in self._decoded]
        reader = self.payload_chunks()
        for k in range(0, len(want), 65536):
            part = np.array(want[k:k + 65536], np.int64)
            data = reader.read(self._column("payload_off")[part], self._column("payload_len")[part])
            for i, raw in zip(part.tolist(), data):
                self._decoded[i] = self._decode_payload(i, raw) if raw else {}
        return [self._decoded[i] for i in rows.tolist()]

    def used(self, i) -> dict:
        p = self.payload(i)
        return p.get("used", {}) if isinstance(p, dict) else {}

    def generated(self, i) -> dict:
        p = self.payload(i)
        return p.get("generated", {}) if isinstance(p, dict) else {}

    def _index(self, task) -> int:
        """Row of a task given as a row number, a task id string or a task dict."""
        if isinstance(task, dict):
            task = task["task_id"]
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            i = int(task)
            if not -self.n <= i < self.n:
                raise IndexError(f"task row {i} out of range (archive has {self.n} tasks)")
            return i % self.n
        if isinstance(task, str):
            wf, tid = parse_task_id(task)
            rows = np.flatnonzero((self._column("task_id") == tid) & (self._column("workflow_id") == wf))
            if not len(rows):
                raise KeyError(f"no task {task} in {self.path}")
            return int(rows[0])
        raise TypeError(f"a task is a row number, a task id string or a task dict, not {task!r}")

    def task(self, task) -> dict:
        """A Flowcept-style task dict (the read path's documents, as read_tasks gives them)."""
        i = self._index(task)
        st: dict = {}
        doc = documents(self.block(i, i + 1), [0], stats=st)[0]
        self.payload_errors += st.get("payload_errors", 0)
        return doc

    def workflows_by_id(self) -> Dict[int, dict]:
        import msgpack
        ids = self._read("workflows/id").tolist()
        offs = self._read("workflows/doc_off").tolist()
        lens = self._read("workflows/doc_len").tolist()
        blob = self._read("workflows/docs")
        try:
            return {i: msgpack.unpackb(blob[o:o + n].tobytes(), raw=False, strict_map_key=False)
                    for i, o, n in zip(ids, offs, lens)}
        except (ValueError, msgpack.UnpackException) as e:
            raise ArchiveError(f"{self.path}: damaged workflow documents: {e}") from None

    @property
    def workflows(self) -> Dict[str, dict]:
        """Workflow documents by workflow id (16 hex digits), as read_workflows gives them."""
        return {f"{k:016x}": v for k, v in self.workflows_by_id().items()}

    # -- queries ---------------------------------------------------------------------------

    def query(self, filter: Optional[dict] = None, *, activity=None, rank=None, node=None,
              status=None, start=None, end=None, tag=None, _rows=None) -> Selection:
        """Tasks matching every given condition, in start time order.

        activity, rank, node, status, tag: a value or a list of values (any of);
        start/end: tasks that started in [start, end) (epoch seconds, datetime or
        ISO string; found by binary search on the sorted start_ns column);
        filter: a Mongo-style dict (see the module doc)."""
        start_ns = self._column("start_ns")
        lo, hi = 0, self.n
        if start is not None:
            lo = int(np.searchsorted(start_ns, _first_ns_at(_to_seconds(start)), "left"))
        if end is not None:
            hi = int(np.searchsorted(start_ns, _first_ns_at(_to_seconds(end)), "left"))
        rows = np.arange(lo, max(lo, hi), dtype=np.int64)
        if _rows is not None:
            r = np.asarray(_rows, np.int64)
            rows = r[(r >= lo) & (r < hi)]
        terms = {}
        for key, val in (("activity", activity), ("rank", rank), ("node", node),
                         ("status", status), ("tags", tag)):
            if val is not None:
                terms[key] = {"$in": list(val)} if isinstance(val, (list, tuple, set, np.ndarray)) else val
        flt = {"$and": [terms, filter]} if filter else terms
        if flt:
            rows = rows[self._match(flt, rows)]
        return Selection(self, rows)

    def _match(self, flt, rows: np.ndarray) -> np.ndarray:
        return mask(flt, _ArchiveColumns(self), rows)[0]

    @staticmethod
    def _is_payload_field(key: str) -> bool:
        return key.split(".", 1)[0] in _PAYLOAD_ROOTS

    def _field_op(self, key: str, op: str, arg, rows: np.ndarray) -> np.ndarray:
        if op in ("$in", "$nin"):
            vals = as_list(arg, op)
            m = np.zeros(len(rows), bool)
            for v in vals:
                m |= self._field_op(key, "$eq", v, rows)
            return ~m if op == "$nin" else m
        if key in _INT_FIELDS or key in _FLOAT_FIELDS or key == "status":
            if key == "status":
                vals = self._column("status")[rows]
                if isinstance(arg, str):
                    if arg.upper() not in STATUS_CODES:
                        raise ValueError(f"unknown status {arg!r}; use one of "
                                         f"{', '.join(STATUS_CODES)} or their codes")
                    arg = STATUS_CODES[arg.upper()]
            elif key in _INT_FIELDS:
                vals = self._column(_INT_FIELDS[key])[rows]
            elif key == "duration":
                vals = (self._column("end_ns")[rows].astype(np.int64)
                        - self._column("start_ns")[rows]) / 1e9
            else:
                vals = self._column("start_ns" if key == "started_at" else "end_ns")[rows] / 1e9
            if not is_number(arg):
                return np.full(len(rows), op == "$ne")
            if isinstance(arg, float) and vals.dtype.kind in "iu" and not arg.is_integer():
                vals = vals.astype(np.float64)
            return _vec_cmp(vals, op, arg)
        if key in _STRING_FIELDS:
            ids = self._column(_STRING_FIELDS[key])[rows]
            if not isinstance(arg, str):
                return np.full(len(rows), op == "$ne")
            table = np.array([match_value(s, op, arg) for s in self.strings.tolist()] + [False])
            return table[np.minimum(ids, len(table) - 1)]
        if key in _ID_FIELDS:
            return self._id_op(key, op, arg, rows)
        if self._is_payload_field(key):
            return None   # the engine matches the decoded payloads (_ArchiveColumns.documents)
        raise ValueError(f"unknown field {key!r}; known: {', '.join(sorted(self.fields()))}, "
                         "or used.<name>, generated.<name>, custom_metadata.<name>")

    def _payload_documents(self, rows) -> List[dict]:
        """Per row, the payload as a document for the payload fields: its own
        keys (used, generated, ...) and the whole payload under "payload"."""
        out = []
        for d in self.decoded_payloads(rows):
            doc = dict(d) if isinstance(d, dict) else {}
            doc["payload"] = d
            out.append(doc)
        return out

    @staticmethod
    def fields() -> List[str]:
        return sorted(set(_INT_FIELDS) | set(_FLOAT_FIELDS) | set(_STRING_FIELDS) | set(_ID_FIELDS)
                      | {"status"} | set(_PAYLOAD_ROOTS))

    def _id_op(self, key, op, arg, rows):
        wf = self._column("workflow_id")[rows]
        if key == "workflow_id":
            if isinstance(arg, str):
                try:
                    arg = int(arg, 16)
                except ValueError:
                    if op in ("$eq", "$ne"):
                        return np.full(len(rows), op == "$ne")
                    raise ValueError(f"workflow_id {arg!r} is not 16 hex digits") from None
            if not is_number(arg):
                return np.full(len(rows), op == "$ne")
            return _vec_cmp(wf, op, arg)
        col = self._column("task_id" if key == "task_id" else "parent_id")[rows]
        null = (col == 0) if key == "parent_task_id" else np.zeros(len(rows), bool)
        if arg is None:
            if op == "$eq":
                return null
            if op == "$ne":
                return ~null
            return np.zeros(len(rows), bool)
        if is_number(arg):
            return _vec_cmp(col, op, arg) & ~null if op != "$ne" else _vec_cmp(col, op, arg) | null
        if not isinstance(arg, str):
            return np.full(len(rows), op == "$ne")
        try:
            W, T = parse_task_id(arg)
        except ValueError:
            if op in ("$eq", "$ne"):
                return np.full(len(rows), op == "$ne")
            raise
        if op in ("$eq", "$ne"):
            m = (wf == W) & (col == T) & ~null
            return ~m if op == "$ne" else m
        strict = op in ("$gt", "$lt")
        if op in ("$gt", "$gte"):
            m = (wf > W) | ((wf == W) & ((col > T) if strict else (col >= T)))
        else:
            m = (wf < W) | ((wf == W) & ((col < T) if strict else (col <= T)))
        return m & ~null

    # -- lineage, provenance, statistics ---------------------------------------------------

    def _links(self):
        """Parent rows and data edges with their values (the report, PROV)."""
        if self._lineage is None:
            self._lineage = Lineage(self)
        return self._lineage

    def _walk_index(self) -> LineageIndex:
        """The read path's lineage index of the archive's columns (its rows are
        the archive's: the table's blocks are in row order)."""
        if self._walks is None:
            self._walks = LineageIndex(self.table())
        return self._walks

    def ancestors(self, task, parents: bool = True, data: bool = True) -> Selection:
        """Tasks this task depends on, transitively: its parent chain and the tasks
        that generated a value it used (rule in flowcept.archive.lineage)."""
        return Selection(self, self._walk_index().walk(self._index(task), True, parents=parents, data=data))

    def descendants(self, task, parents: bool = True, data: bool = True) -> Selection:
        """Tasks depending on this task, transitively: its children and the tasks
        that used a value it generated."""
        return Selection(self, self._walk_index().walk(self._index(task), False, parents=parents, data=data))

    def to_prov(self, workflow=None, tasks=None) -> dict:
        """W3C PROV-JSON document of the archive, one workflow, or some tasks."""
        from flowcept.archive.prov import to_prov
        return to_prov(self, workflow=workflow, tasks=tasks)

    def stats(self, rows=None) -> np.ndarray:
        """Per activity: count, mean, p50, p95, p99, max and total duration (seconds)."""
        from flowcept.archive.stats import activity_stats
        return activity_stats(self, rows)

    def rank_load(self) -> dict:
        """Per rank busy time of top-level tasks and the imbalance max/mean."""
        from flowcept.archive.stats import rank_load
        return rank_load(self)

    def throughput(self, bin_s: float = 1.0) -> np.ndarray:
        """Tasks finished per time bin: fields t_s (bin start, seconds after the
        first start), count, per_s."""
        from flowcept.archive.stats import throughput
        return throughput(self, bin_s)

    def slowest(self, n: int = 10) -> Selection:
        """The n longest tasks, longest first."""
        d = self._column("end_ns").astype(np.int64) - self._column("start_ns")
        n = min(int(n), self.n)
        if n <= 0:
            return Selection(self, [])
        top = np.argpartition(-d, n - 1)[:n] if n < self.n else np.arange(self.n)
        return Selection(self, top[np.lexsort((top, -d[top]))])

    def failed(self) -> Selection:
        """Tasks with status ERROR."""
        return Selection(self, np.flatnonzero(self._column("status") == STATUS_ERROR))


def _version() -> str:
    from flowcept import __version__
    return __version__


class _ArchiveColumns(Columns):
    """The archive's columns for the filter engine: header fields vectorised
    with numpy, payload fields through the decoded payloads."""

    def __init__(self, archive: "Archive"):
        self.archive = archive

    def field_mask(self, field, op, arg, rows):
        if self.archive._is_payload_field(field):
            return None   # matched on the decoded payloads, every operator
        if op not in _OPS:
            raise ValueError(f"unknown operator {op!r}; supported: {', '.join(_OPS)}")
        return self.archive._field_op(field, op, arg, rows)

    def documents(self, rows):
        return self.archive._payload_documents(rows)

    def cost(self, field):
        return 1 if self.archive._is_payload_field(field) else 0


class ArchiveTable(Table):
    """An archive as a read-path table: blocks of ``block_rows`` rows (by
    default four /index blocks, 262,144 rows: fewer, larger numpy passes),
    each with the index's bounds as its summary (t0/s1 smallest/largest
    start, t1 largest end), so that a time condition or a time order skips
    blocks without reading them."""

    INDEX_BLOCKS = 4

    def __init__(self, archive: Archive, block_rows: Optional[int] = None):
        self.archive = archive
        a = archive
        h = a._h5
        idx, B0 = None, 0
        if "index" in h:
            ig = h["index"]
            B0 = int(ig.attrs.get("block_rows", 0) or 0)
            if B0 and all(k in ig for k in ("start_min", "start_max", "end_max")):
                idx = (ig["start_min"][()], ig["start_max"][()], ig["end_max"][()])
                if any(len(x) != (-(-a.n // B0) if a.n else 0) for x in idx):
                    idx = None
        if not B0:
            chunks = h["tasks/start_ns"].chunks
            B0 = int(chunks[0]) if chunks else 1 << 16
        B = block_rows or B0 * self.INDEX_BLOCKS
        if idx is not None and B % B0 == 0:
            k = B // B0      # a block's bounds from the index blocks it spans
            self.bounds = tuple(f.reduceat(x, np.arange(0, len(x), k)) if len(x) else x
                                for f, x in ((np.minimum, idx[0]), (np.maximum, idx[1]),
                                             (np.maximum, idx[2])))
        else:
            self.bounds = None
        self.block_rows = B

    def refs(self, cond: Optional[dict] = None) -> List[Ref]:
        a, B = self.archive, self.block_rows
        out = []
        for k in range(-(-a.n // B) if a.n else 0):
            lo, hi = k * B, min(a.n, (k + 1) * B)
            summary = {"n": hi - lo, "e0": 0}
            if self.bounds is not None:
                summary.update(t0=int(self.bounds[0][k]), s1=int(self.bounds[1][k]),
                               t1=int(self.bounds[2][k]))
            if cond and not batch_may_match(summary, cond):
                continue
            out.append(Ref((lo, hi), hi - lo, summary))
        return out

    def blocks(self, refs: Sequence[Ref]):
        for r in refs:
            yield r, self.archive.block(*r.id)

    def generation(self):
        return (self.archive.path, self.archive.n)
