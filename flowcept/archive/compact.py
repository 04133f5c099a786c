"""Compaction: a job's LMDB store(s) -> one HDF5 archive (docs/archive-format.md).

An offline step: it reads stores and writes a file, nothing else (recovery of
what a crashed job left behind is the caller's step before it: ``flowcept
compact --recover`` and the epilog run flowcept.node.recovery first).

Pipeline, in memory bounded by ``memory_bytes`` (configuration key
``compact_memory_bytes``, default 256 MiB) whatever the number of records; the row
work is in C (flowcept.native.columns), with no per-record Python objects:

1. index pass: scan every batch of every store under the path (one store per
   node); batches already in the output archive (same batch key) are skipped.
   Per batch: its payload area is appended to the payload blob (records keep
   their offsets, moved by the blob position; the blob is compressed and
   written while the scan goes on), its strings go into the one global string
   table (once per distinct table: a ring's batches share theirs), and what is
   needed to read its rows again is kept (key, string map, payload offset,
   count, first and last start time, from one C pass over its records).  The
   pages of the store's memory map are let go once a batch is read, so
   resident memory does not grow with the store.
2. the rows (the batch-local activity ids and the node name mapped to global
   string ids, each row's place in the scan order added) are decoded in C and
   sorted by start_ns, ties in scan order (the archive being merged into
   first), in one of three ways:
   - everything fits in the run buffer and nothing is merged into: the rows are
     decoded in the index pass itself, sorted in memory, and each chunk is
     gathered by the sort order in the pool;
   - chains (the usual case past that): batches are nearly time-ordered, a
     ring's batches one after the other, so the batches are grouped into
     chains whose start times never go back from one batch to the next; each
     chain is a sorted run as it lies in the store, and the chains (and the
     rows of the archive being merged into) are merged k-way, two blocks of
     whole batches held per chain and the next one read ahead in a thread;
     nothing goes to a temporary file;
   - when one block per chain does not fit in the bound (very many chains, or
     more stores than stay open): the run buffer, sorted when full and written
     as a sorted run to an anonymous temporary file next to the output
     (deleted by the kernel even if the process is killed), the runs merged
     k-way a bounded block each.
   A merge round orders the rows of its blocks on a loser tree in C without
   moving them: the order (part, row) goes to the writer.  Duplicates by
   (workflow_id, task_id) are dropped on the way (a task's records share its
   start time, so duplicates meet in the merged order; a finished record is
   kept over a RUNNING one, else the first).
3. the merged rows are cut into chunks; every column of a chunk is gathered by
   the order and shuffled in one C pass, then deflated, in a thread pool
   (zlib, or ISA-L's faster deflate when the optional ``isal`` package is
   installed; both release the GIL) and written with H5Dwrite_chunk, so
   compaction scales with the cores; lzf goes through h5py's filter pipeline.

Everything is written to a temporary file next to the output, fsynced and
renamed over the output: an interrupted compaction never leaves a
half-written archive under the final name, and merging into an existing
archive (append) leaves it intact until the new one is complete.

This module is the orchestration (which path, within which shares of the
bound) and the public ``compact``; the parts are flowcept.archive.format (the
file's layout, from the record dtype), .scan (reading the stores), .merge
(sorting and duplicates) and .writer (the HDF5 datasets).
"""
from __future__ import annotations

import glob
import json
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional

from flowcept.archive.format import (BLOB_CHUNK, CHUNK_ROWS, COMPRESSIONS, ROW_BYTES,
                                     root_attributes)
from flowcept.archive.merge import ArchiveRun, MemRun, Runs, dedupe_run, merge, plan_chains
from flowcept.archive.scan import ChainRun, Index, Reader, RowDecoder
from flowcept.archive.writer import Blob, TaskColumns, Writer, write_tables
from flowcept.osutil import process_alive

__all__ = ["compact", "CompactReport", "COMPRESSIONS", "CHUNK_ROWS", "DEFAULT_MEMORY", "MIN_MEMORY"]

DEFAULT_MEMORY = 256 << 20    # the configuration's default compact_memory_bytes
MIN_MEMORY = 16 << 20

# How the memory bound is shared.  Scan-time bytes per row held: the row, and for its sort
# the permutation (8), timsort's scratch of up to half of it (4) and the sorted start times (8)
_SCAN_BYTES_PER_ROW = ROW_BYTES + 20
# Of memory_bytes, for the run buffer (the rest: compression pool, blob chunks, HDF5 caches).
# The scan's buffer is let go before the merge starts, so the two shares do not add up.
_SCAN_SHARE = 0.6
_MERGE_SHARE = 0.2            # of memory_bytes, for the merge's blocks (each round copies twice)
_WRITE_SHARE = 0.1            # of memory_bytes, for the chunks in the compression pool
_MIN_BLOCK = 1024
# Chain merge bytes per row held: two blocks (row + its scan position) held by the merge, the
# next one read ahead, and the blocks of the last round still referenced by chunks in flight
_CHAIN_BYTES_PER_ROW = 5 * (ROW_BYTES + 8)
_MAX_CHAINS = 512
_MAX_OPEN_STORES = 128      # stores open at once in the row and payload passes


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
    runs: int = 0                 # sorted runs written to the temporary file (0: all in memory)
    chains: int = 0               # chains of batches merged straight from the stores (0: none)
    memory_bytes: int = DEFAULT_MEMORY   # the memory bound it ran under

    def describe(self) -> str:
        rate = self.new_records / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.output}: {self.records} task records ({self.new_records} new"
                + (f", {self.duplicates} duplicates dropped" if self.duplicates else "")
                + (f", {self.skipped_batches} batches already archived" if self.skipped_batches else "")
                + f"), {self.workflows} workflow(s) from {len(self.stores)} store(s); "
                f"{self.bytes / max(self.records, 1):.1f} bytes/record, {self.seconds:.2f} s"
                + (f", {rate / 1e6:.2f} M records/s" if self.new_records else "")
                + (f", {self.runs} sorted runs merged within {self.memory_bytes >> 20} MiB"
                   if self.runs else "")
                + (f", {self.chains} chains of batches merged within {self.memory_bytes >> 20} MiB"
                   if self.chains else ""))


def _Progress(total: int, enabled: bool, label: str = "compacting"):
    from flowcept.progress import Progress
    return Progress(total, enabled, label, delay_s=0.0)


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


def _memory_default() -> int:
    """The configured bound (a bad value fails with the ConfigError that names it)."""
    from flowcept.config import load_config
    return int(load_config().compact_memory_bytes)


def _archive_block(chain_rows: int) -> int:
    return max(_MIN_BLOCK, chain_rows // 8)


class _Compaction:
    """One compaction into an open (temporary) HDF5 file."""

    def __init__(self, h5, writer: Writer, stores: List[str], existing, report: CompactReport,
                 progress: bool, job_override: Optional[str], chunk_rows: int, memory: int,
                 spill_dir: str):
        self.h5, self.w, self.stores, self.existing = h5, writer, stores, existing
        self.report, self.progress, self.job_override = report, progress, job_override
        self.chunk_rows, self.memory, self.spill_dir = chunk_rows, memory, spill_dir
        self.index: Optional[Index] = None

    def run(self):
        from flowcept.store import open_store_at
        # the payloads are written by a thread of their own while the rows are merged
        payloads = Blob(self.w.sibling(), "payloads")
        existing = self.existing
        n_old = 0
        if existing is not None:
            src = existing._h5["payloads"]
            if not payloads.copy_raw_chunks(src):
                for lo in range(0, src.shape[0], 16 * BLOB_CHUNK):
                    payloads.append(src[lo:lo + 16 * BLOB_CHUNK])
            n_old = len(existing)
            self.index = Index(existing.strings.tolist(),
                               {tuple(k) for k in existing._h5["batches"][()].tolist()},
                               {int(k): dict(v) for k, v in existing.workflows_by_id().items()},
                               n_old, payloads.size, self.job_override)
        else:
            self.index = Index(seq=0, blob_end=payloads.size, job_override=self.job_override)

        total_batches = expect = 0
        for sp in self.stores:
            with open_store_at(sp) as st:
                for _k, summ in st.summaries():
                    total_batches += 1
                    expect += int(summ.get("n", 0))
        run_rows = max(int(self.memory * _SCAN_SHARE) // _SCAN_BYTES_PER_ROW, _MIN_BLOCK)
        # a job whose rows fit in the run buffer (by the stores' summaries): one pass over
        # the stores, rows and payloads copied as each batch is read
        one_pass = (Runs(run_rows, expect, self.spill_dir, 0, RowDecoder)
                    if not n_old and expect <= run_rows else None)
        try:
            self._run(n_old, payloads, one_pass, total_batches, open_store_at)
        finally:
            if one_pass is not None:
                one_pass.close()

    def _run(self, n_old, payloads, one_pass, total_batches, open_store_at):
        existing, index = self.existing, self.index
        bar = _Progress(total_batches, self.progress)
        try:
            for si, sp in enumerate(self.stores):
                index.scan_store(si, sp, open_store_at, bar, payloads, one_pass)
        finally:
            bar.close()
        self.report.batches, self.report.skipped_batches = index.batches, index.skipped_batches
        refs = index.refs
        n_new = sum(r.m for r in refs)
        n_upper = n_old + n_new
        chunk = max(1, min(self.chunk_rows, n_upper)) if n_upper else self.chunk_rows
        g = self.h5.create_group("tasks")
        old_jobs = json.loads(existing._h5["tasks"].attrs.get("jobs", "[]")) if existing is not None else []
        g.attrs["jobs"] = json.dumps(list(dict.fromkeys(old_jobs + index.jobs_seen)))
        cols = TaskColumns(self.w, n_upper, chunk)
        payloads.close()
        if one_pass is not None:
            dropped = self._finish_runs(one_pass, 0, cols)
        else:
            with Reader(self.stores, open_store_at, _MAX_OPEN_STORES) as reader:
                dropped = self._merge_rows(refs, n_old, n_new, reader, cols)
        cols.close(self.h5)
        n = cols.n
        self.report.records = n
        self.report.new_records = n - n_old
        self.report.duplicates = dropped
        self.report.workflows = write_tables(self.h5, index.strings.items, index.workflows,
                                             index.keys_out)

    def _merge_rows(self, refs, n_old, n_new, reader, cols) -> int:
        """The rows, sorted, into ``cols`` by the cheapest path the bound allows; returns
        how many duplicates were dropped."""
        existing = self.existing
        run_rows = max(int(self.memory * _SCAN_SHARE) // _SCAN_BYTES_PER_ROW, _MIN_BLOCK)
        chain_rows = int(self.memory * _SCAN_SHARE) // _CHAIN_BYTES_PER_ROW
        plan = None
        # chains read every store all along: only when they can all stay open
        if (n_old or n_new > run_rows) and len(self.stores) <= _MAX_OPEN_STORES:
            plan = plan_chains(refs, chain_rows - (_archive_block(chain_rows) if n_old else 0),
                               _MAX_CHAINS)
        if plan is None:
            return self._merge_runs(refs, n_old, n_new, run_rows, reader, cols)
        # the stores' batches read again, chain by chain, and merged: no temporary file
        self.report.chains = len(plan)
        sources = [ArchiveRun(existing._h5, _archive_block(chain_rows))] if n_old else []
        with ThreadPoolExecutor(1) as ahead:
            sources += [ChainRun(c, target, reader, ahead) for c, target in plan]
            try:
                return merge(sources, cols.append)
            finally:
                for s in sources:
                    if getattr(s, "next", None) is not None:
                        s.next.cancel()

    def _merge_runs(self, refs, n_old, n_new, run_rows, reader, cols) -> int:
        """The rows in scan order through the run buffer: one sorted run in memory when
        everything fits (no merge), else sorted runs in the temporary file merged k-way."""
        runs = Runs(run_rows, n_new, self.spill_dir, n_old, RowDecoder)
        try:
            for ref, frame in reader.frames(refs):
                runs.add(frame, ref)
            reader.release.flush()
            return self._finish_runs(runs, n_old, cols)
        finally:
            runs.close()

    def _finish_runs(self, runs: Runs, n_old: int, cols) -> int:
        existing = self.existing
        sources = ([ArchiveRun(existing._h5)] if n_old else []) + runs.finish(1 if n_old else 0)
        self.report.runs = runs.spilled
        if len(sources) == 1 and isinstance(sources[0], MemRun):
            parts, order, keys, dropped = dedupe_run(sources[0])
            cols.append(parts, order, keys)
            return dropped
        block = max(_MIN_BLOCK, int(self.memory * _MERGE_SHARE)
                    // (max(len(sources), 1) * (ROW_BYTES + 8)))
        for s in sources:
            s.block_rows = block
        return merge(sources, cols.append)

    def metadata(self, compression: str) -> dict:
        existing, h5 = self.existing, self.h5
        return root_attributes(
            sources=((json.loads(existing.attrs.get("sources", "[]")) if existing else [])
                     + [os.path.abspath(s) for s in self.stores]),
            records=self.report.records, workflows=self.report.workflows,
            block_rows=int(h5["index"].attrs["block_rows"]), compression=compression,
            jobs=json.loads(h5["tasks"].attrs["jobs"]))


def _fsync(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(path: str, out: str, *, append: bool = True, overwrite: bool = False,
            compression: str = "gzip", level: int = 1, threads: Optional[int] = None,
            progress: Optional[bool] = None, job: Optional[str] = None,
            chunk_rows: int = CHUNK_ROWS, memory_bytes: Optional[int] = None) -> CompactReport:
    """Compacts every store under ``path`` (a run, job or store directory) into ``out``.

    append        out exists: merge into it (default); records already there
                  -- same (workflow_id, task_id) -- are not added twice
    overwrite     out exists: replace it instead
    compression   "gzip" (default, level 1, readable by any HDF5), "lzf"
                  (h5py's filter) or "none"
    threads       compression threads (default: CPU count)
    progress      progress bar on stderr (default: when stderr is a TTY)
    job           job name for the records (default: from the store path)
    memory_bytes  bound on what the sort holds (default: configuration key
                  compact_memory_bytes, 256 MiB); more records than fit go
                  through sorted runs in a temporary file next to ``out``

    What a crashed job left on a node is not read here: run
    flowcept.node.recovery.recover_job first (``flowcept compact --recover``).
    """
    import h5py

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    if not 0 <= level <= 9:
        raise ValueError(f"compression level {level}: must be between 0 and 9")
    memory = _memory_default() if memory_bytes is None else int(memory_bytes)
    if memory < MIN_MEMORY:
        raise ValueError(f"memory_bytes {memory}: must be at least {MIN_MEMORY} (16 MiB)")
    from flowcept.query.tasks import find_stores
    t0 = time.perf_counter()
    out = os.fspath(out)
    report = CompactReport(output=out, memory_bytes=memory)
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
        from flowcept.archive.hdf5 import Archive
        existing = Archive(out)

    out_dir = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temps(out)
    tmp = os.path.join(out_dir, f".{os.path.basename(out)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    # owner-only, like every file flowcept writes (h5py would create it 0644):
    # provenance holds arguments and values; share it with chmod on purpose
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        with h5py.File(tmp, "w") as h5:
            writer = Writer(h5, compression, level, threads, int(memory * _WRITE_SHARE))
            try:
                job_run = _Compaction(h5, writer, stores, existing, report, progress, job,
                                      chunk_rows, memory, out_dir)
                job_run.run()
                writer.flush()
                for k, v in job_run.metadata(compression).items():
                    h5.attrs[k] = v
            finally:
                writer.close()
        if existing is not None:
            existing.close()
            existing = None
        _fsync(tmp)
        os.replace(tmp, out)
        _fsync(out_dir)
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
