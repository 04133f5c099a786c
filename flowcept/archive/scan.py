"""Reading the stores for a compaction: the index pass (what each batch holds and where its
rows and payloads go), the batches read again by key (an LRU of open stores, shared by
threads), the chains of batches as sources of sorted rows, and the pages of the stores'
memory maps (read ahead before a frame is read, let go after it is copied, so that resident
memory does not grow with the store).
"""
from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np

from flowcept.archive import ArchiveError
from flowcept.archive.format import NAMES, SEQ, Block
from flowcept.record.layout import BATCH_HEADER_DTYPE, FLAG_WORKFLOW, NODE_PREFIX

READ_AHEAD = 32 << 20      # bytes of a store asked for ahead of the index pass (cold stores)


class Strings:
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


class BatchRef:
    """What the index pass learnt of a batch of task records: enough to read its rows again."""

    __slots__ = ("store", "key", "m", "smin", "smax", "seq", "base", "lut", "node", "job",
                 "only_tasks")

    def __init__(self, store, key, m, smin, smax, seq, base, lut, node, job, only_tasks):
        self.store, self.key, self.m, self.smin, self.smax = store, key, m, smin, smax
        self.seq = seq                 # scan position of its first row (ties sort by it)
        self.base, self.lut, self.node, self.job = base, lut, node, job
        self.only_tasks = only_tasks   # no workflow records among its records


def _specs(block: Block):
    """How each column of a block is filled from a batch's records (flowcept.native.columns
    kinds): the /tasks columns derived from the record dtype, the activity id mapped to the
    global string table, the payload offset moved by the batch's place in the blob, node
    and job constant per batch, seq counted up from the batch's first row."""
    from flowcept.archive import columns
    from flowcept.native import columns as nc
    specs, addr = [], []
    for i, (name, fld, _dt) in enumerate(columns()):
        kind = (nc.CONST if fld is None else nc.LUT if fld == "activity_id"
                else nc.ADD if fld == "payload_off" else nc.COPY)
        specs.append((kind, fld, block.cols[name]))
        addr.append(int(block.addr[i]))
    if block.has_seq:
        specs.append((nc.SEQ, None, block.cols[SEQ[0]]))
        addr.append(int(block.addr[NAMES.index(SEQ[0])]))
    return specs, addr


class RowDecoder:
    """Writes the archive rows of batches into a block (C: fc_batch_columns)."""

    def __init__(self, block: Block):
        from flowcept.native.columns import Decoder
        specs, addr = _specs(block)
        self.block = block
        self.dec = Decoder(specs, addr)

    def fill(self, frame, ref: BatchRef, at: int) -> int:
        """Rows of the batch at rows ``at``..; returns how many (``ref.m`` unless the batch
        changed)."""
        return self.dec.fill(frame, at, lut=ref.lut, add=ref.base, consts=(ref.node, ref.job),
                             seq=ref.seq)


class MapRelease:
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


class Reader:
    """The stores, opened for reading batches again by key, in any order, from several
    threads.  A store is opened once (an LMDB environment must not be opened twice in one
    process) and shared; at most ``max_open`` stay open (each maps its whole map
    size of address space), the least recently used idle one closed first."""

    def __init__(self, stores: List[str], open_store_at, max_open: int):
        self.paths, self.open_store_at, self.max_open = stores, open_store_at, max_open
        self.open: "OrderedDict[int, object]" = OrderedDict()
        self.users: Dict[int, int] = {}
        self.lock = threading.Lock()
        self.release = MapRelease()

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
                while len(self.open) >= self.max_open:
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

    def frames(self, refs: List[BatchRef], release: Optional["MapRelease"] = None):
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


class ChainRun:
    """A chain of batches read from the stores a block (whole batches) at a time, each block
    sorted by (start_ns, scan position).  The next block is read ahead in the reader thread
    while the merge works on this one."""

    def __init__(self, refs: List[BatchRef], block_rows: int, reader: Reader, ahead):
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

    def read_block(self) -> Block:
        if self.next is None:
            self._submit()
        block = self.next.result()
        self.next = None
        if self.pos < len(self.refs):
            self._submit()
        return block

    def _read(self, refs: List[BatchRef], total: int) -> Block:
        block = Block.empty(total, seq=True)
        dec = RowDecoder(block)
        at = 0
        for ref, frame in self.reader.frames(refs):
            if dec.fill(frame, ref, at) != ref.m:
                raise ArchiveError("a batch changed while it was being compacted")
            at += ref.m
        self.reader.release.flush()
        s = block["start_ns"]
        if total > 1 and not np.all(s[1:] >= s[:-1]):   # a batch not in start order itself
            block = block.take(np.argsort(s, kind="stable"))
        return block


def job_of_store(store_path: str, workflows: dict) -> str:
    parent = os.path.dirname(os.path.abspath(store_path))
    if os.path.basename(parent) == "store":
        return os.path.basename(os.path.dirname(parent))
    jobs = {str(d.get("job")) for d in workflows.values() if d.get("job")}
    if len(jobs) == 1:
        return jobs.pop()
    return os.path.basename(os.path.abspath(store_path))


# the batch header as struct fields, in BATCH_HEADER_DTYPE's order
_HEADER = struct.Struct("<" + "".join({8: "Q", 4: "I", 2: "H"}[BATCH_HEADER_DTYPE.fields[n][0].itemsize]
                                      for n in BATCH_HEADER_DTYPE.names))
_H = {name: i for i, name in enumerate(BATCH_HEADER_DTYPE.names)}


class _BatchFacts:
    """What the index pass needs of a batch, in one C pass over its records
    (fc_batch_summarize): (task records, their least and greatest start, whether all
    records are tasks, the payload area, the string table's bytes)."""

    def __init__(self):
        from flowcept.native import ffi, lib
        self.ffi, self.lib = ffi, lib
        self.out = ffi.new("fc_batch_summary *")
        self.wfs = ffi.new("uint64_t[]", 64)
        self.acts = ffi.new("uint32_t[]", 1)

    def of(self, frame):
        h = _HEADER.unpack_from(frame)
        mv = memoryview(frame).cast("B")
        nstr = h[_H["string_count"]]
        if len(self.acts) < nstr:
            self.acts = self.ffi.new("uint32_t[]", nstr)
        poff = h[_H["payload_off"]]
        payload = mv[poff:poff + h[_H["payload_bytes"]]]
        table = bytes(mv[h[_H["strings_off"]]:])
        out = self.out
        if self.lib.fc_batch_summarize(self.ffi.from_buffer(mv), len(mv), out, self.acts, self.wfs,
                                       len(self.wfs)) == 0:
            if not out.tasks:
                return 0, 0, 0, True, payload, table
            return out.tasks, out.t0, out.s1, out.workflows == 0, payload, table
        # a batch the C pass leaves to numpy (an unknown activity id, many workflows)
        from flowcept.native.batch import Batch
        recs = Batch(frame, check=False).records
        tasks = (recs["flags"] & FLAG_WORKFLOW) == 0
        start = recs["start_ns"][tasks]
        if not len(start):
            return 0, 0, 0, True, payload, table
        return len(start), int(start.min()), int(start.max()), bool(tasks.all()), payload, table


class Index:
    """The index pass over the stores: the global string table, the workflows, the batch
    keys, and per batch of task records a BatchRef; ``seq`` and ``blob_end`` are where the
    next batch's rows go in the scan order and its payload area in the blob."""

    def __init__(self, strings=(), known_keys=(), workflows=None, seq: int = 0, blob_end: int = 0,
                 job_override: Optional[str] = None):
        self.strings = Strings(strings)
        self.known_keys = set(known_keys)
        self.keys_out: List[tuple] = list(self.known_keys)
        self.workflows: Dict[int, dict] = workflows if workflows is not None else {}
        self.jobs_seen: List[str] = []
        self.refs: List[BatchRef] = []
        self.seq, self.blob_end = seq, blob_end
        self.job_override = job_override
        self.batches = self.skipped_batches = 0

    def scan_store(self, si: int, sp: str, open_store_at, bar, payloads, runs=None):
        """The index pass over one store: strings into the table, each batch's payload area
        appended to the blob ``payloads``, and per batch of task records what the row pass
        needs to read it again (its key, string map, payload offset, count and start-time
        range).  With ``runs`` (the run buffer, when everything fits) each batch's rows go
        there as it is read: there is no row pass."""
        from flowcept.native.batch import unpack_batch_key
        strings, refs = self.strings, self.refs
        seq = self.seq
        facts = _BatchFacts()
        tables: Dict[bytes, Tuple[np.ndarray, int]] = {}   # a ring's batches share their table
        with open_store_at(sp) as st:
            store_wfs = st.workflows()
            job_name = self.job_override or job_of_store(sp, store_wfs)
            if job_name not in self.jobs_seen:
                self.jobs_seen.append(job_name)
            job_id = strings.id(job_name)
            for wf, doc in store_wfs.items():
                self.workflows.setdefault(wf, {}).update(doc)
            # zero-copy frames: views into the store's memory map, valid until the next item;
            # their pages are let go once read, so that RSS stays within the bound
            release = MapRelease()
            for key, frame in st.scan(zero_copy=True):
                release.next(frame, window=READ_AHEAD)
                self.batches += 1
                k = unpack_batch_key(key)
                if k in self.known_keys:
                    self.skipped_batches += 1
                    bar.update(1, 0)
                    continue
                self.keys_out.append(k)
                m, smin, smax, only_tasks, payload, table = facts.of(frame)
                if not m:
                    bar.update(1, 0)
                    continue
                got = tables.get(table)
                if got is None:
                    from flowcept.native.batch import Batch
                    names = Batch(frame, check=False).strings
                    node = names[0][len(NODE_PREFIX):] if names and names[0].startswith(NODE_PREFIX) else ""
                    lut = np.array([strings.id(x) for x in names] + [strings.id("")], np.uint32)
                    got = tables[table] = (lut, strings.id(node))
                lut, node_id = got
                base = self.blob_end
                self.blob_end += len(payload)
                ref = BatchRef(si, bytes(key), m, smin, smax, seq, base, lut, node_id, job_id,
                               only_tasks)
                refs.append(ref)
                if runs is not None:
                    runs.add(frame, ref)
                if payloads.append(payload) != base:
                    raise ArchiveError("payload blob out of step with the index")
                seq += m
                self.seq = seq
                bar.update(1, m)
            release.flush()
