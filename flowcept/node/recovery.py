"""Recovery of what a job left on a node: rings of killed ranks, rings a
dead leader never drained, and their spill files.

Only rings whose producer has ended (closed, or its process is gone) are
taken: a live ring belongs to its leader (one consumer per ring).  Torn
records (a producer killed in the middle of a push) are skipped and
counted by the C consumer.  Re-running is harmless: a batch already in the
store has the same id and is skipped.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from flowcept.config import load_config
from flowcept.osutil import process_alive

log = logging.getLogger("flowcept.node.recovery")


@dataclass
class RecoveryReport:
    job: str
    ring_dir: str
    rings: int = 0
    records: int = 0
    torn: int = 0
    skipped_live: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    verb: str = "recovered"

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe(self) -> str:
        if not self.rings and not self.skipped_live and not self.errors:
            return f"job {self.job}: nothing to recover in {self.ring_dir}"
        parts = [f"job {self.job}: {self.verb} {self.records} records from {self.rings} ring(s)"
                 f" in {self.ring_dir}"]
        if self.torn:
            parts.append(f"{self.torn} torn record(s) skipped")
        if self.skipped_live:
            parts.append(f"{len(self.skipped_live)} ring(s) still in use, left alone")
        parts.extend(f"error: {e}" for e in self.errors)
        return "; ".join(parts)



def recover_job(job: str, shm_dir: Optional[str] = None, run_dir: Optional[str] = None,
                transport: Optional[str] = None, config=None,
                rings: Optional[List[str]] = None,
                progress: Optional[bool] = False) -> RecoveryReport:
    """``progress``: a bar on stderr (None: when it is a terminal) for a
    recovery longer than 2 s.
    ``rings``: only these ring files of the job's ring dir (the epilog passes the ones it
    has vetted); default every ``*.ring`` there."""
    from flowcept.record import job as jobs
    from flowcept.node.drain import Drainer, remove_ring_files
    from flowcept.native.ring import Ring, RingError
    from flowcept.node.leader import open_leader
    overrides = {k: v for k, v in (("shm_dir", shm_dir), ("run_dir", run_dir),
                                   ("transport", transport)) if v}
    config = (config or load_config()).replace(**overrides) if overrides else (config or load_config())
    directory = jobs.ring_dir(config, job)
    report = RecoveryReport(job=job, ring_dir=directory)
    paths = sorted(glob.glob(os.path.join(directory, "*.ring")))
    if rings is not None:
        wanted = {os.path.abspath(p) for p in rings}
        paths = [p for p in paths if os.path.abspath(p) in wanted]
    if not paths:
        return report
    ended = {}
    try:
        for path in paths:
            try:
                ring = Ring.open(path)
            except RingError as e:
                report.errors.append(ring_error(path, e))
                continue
            st = ring.stats()
            if not _ended(st) or not ring.lock_consumer():   # a live producer or leader
                report.skipped_live.append(path)
                ring.close()
                continue
            ended[path] = ring
    except BaseException:
        for ring in ended.values():
            ring.close()
        raise
    if not ended:          # nothing to drain: open no transport (and create no store)
        return report
    drainer = open_leader(config, jobs.job_info(config, job))
    drainer.rings.update(ended)
    try:
        report.records = drainer.drain_all(progress=progress, label=f"recovering job {job}")
        report.rings = len(drainer.rings)
        for path, ring in drainer.rings.items():
            report.torn += ring.stats()["torn"]
    finally:
        drained = list(drainer.rings)
        drainer.close()
    # drain_all returned: every drained record is at the transport or in the spool
    for path in drained:
        remove_ring_files(path)
    try:
        os.rmdir(directory)
    except OSError:
        pass
    return report


def ring_error(path: str, e) -> str:
    """What a ring that cannot be opened is, in words (and what to do)."""
    from flowcept.record.layout import FORMAT_VERSION
    if e.errno == errno.EBADMSG:
        return (f"{path}: not a complete ring (its producer died while creating it, or it is "
                "not a flowcept ring); skipped")
    if e.errno == errno.EPROTO:
        return (f"{path}: ring of another format version (this flowcept reads format "
                f"{FORMAT_VERSION}); skipped: drain it with the flowcept version that wrote it")
    if e.errno in (errno.EPERM, errno.ELOOP):
        return f"{path}: not a regular file owned by this user ({os.strerror(e.errno)}); skipped"
    return f"{path}: cannot open ring ({os.strerror(e.errno)}); skipped"


def follow_job(job: str, config=None, stop=None, exit_when_idle_s: Optional[float] = None,
               poll_s: Optional[float] = None) -> RecoveryReport:
    """The node leader of a job whose ranks have no Python leader (C, C++,
    Fortran codes using the C API): drains every ring that appears in the
    job's ring directory while the job runs, retires a ring (drained, files
    removed) once its producer closed it or died, and returns when ``stop``
    (a threading.Event) is set, or after ``exit_when_idle_s`` seconds without
    a live ring (none appeared yet, or every one seen has ended).  The
    transport (and so the store) is opened with the first ring.  A ring of
    another format version (-EPROTO) or one that cannot be opened is
    reported in ``errors`` and skipped.  Run one per node, e.g.
    ``srun --ntasks-per-node=1 --overlap flowcept drain $SLURM_JOB_ID &``.
    Never point it at a job whose ranks use flowcept.mpi.instrument: those
    rings already have a consumer (their leader)."""
    import threading
    import time
    from flowcept.record import job as jobs
    from flowcept.node.drain import Drainer, remove_ring_files
    from flowcept.native.ring import Ring, RingError
    from flowcept.node.leader import open_leader
    config = config or load_config()
    stop = stop or threading.Event()
    poll = poll_s if poll_s is not None else config.drain_interval_ms / 1000
    directory = jobs.ring_dir(config, job)
    report = RecoveryReport(job=job, ring_dir=directory, verb="drained")
    drainer = None     # opened with the first ring: no ring, no transport and no store
    retired, failed = set(), set()

    def adopt_new(final=False):
        nonlocal drainer
        for path in sorted(glob.glob(os.path.join(directory, "*.ring"))):
            if (drainer is None or path not in drainer.rings) and path not in retired:
                try:
                    ring = Ring.open(path)
                except RingError as e:
                    if e.errno == errno.ENOENT:
                        continue     # gone
                    if e.errno == errno.EBADMSG and not final:
                        continue     # still being created: next round
                    msg = ring_error(path, e)
                    log.error("flowcept drain: %s", msg)
                    report.errors.append(msg)
                    retired.add(path)
                    failed.add(path)
                    continue
                if not ring.lock_consumer():
                    ring.close()     # a live leader drains it: next round
                    continue
                if drainer is None:
                    try:
                        drainer = open_leader(config, jobs.job_info(config, job))
                    except BaseException:
                        ring.close()
                        raise
                drainer.rings[path] = ring

    def retire_ended():
        if drainer is None:
            return
        ended = [p for p, r in drainer.rings.items() if _ended(r.stats())]
        if ended:
            report.records += drainer.drain_once(max_batches=1 << 30)
            report.records += drainer.drain_spills()
            for path in ended:
                ring = drainer.rings.pop(path)
                report.torn += ring.stats()["torn"]
                ring.close()
                remove_ring_files(path)
                retired.add(path)

    idle_since = time.monotonic()
    try:
        while not stop.is_set():
            adopt_new()
            if drainer is not None:
                report.records += drainer.drain_once(lazy=True)
            retire_ended()
            if drainer is not None and drainer.rings:
                idle_since = time.monotonic()
            elif exit_when_idle_s is not None and time.monotonic() - idle_since >= exit_when_idle_s:
                break          # no ring (ever, or any more) for exit_when_idle_s
            stop.wait(poll)
        adopt_new(final=True)           # rings that appeared since the last round
        if drainer is not None:
            report.records += drainer.drain_all()
        retire_ended()
        live = list(drainer.rings) if drainer is not None else []
        report.rings = len(retired - failed) + len(live)
        report.skipped_live = live   # still open at exit: left for the epilog
    finally:
        if drainer is not None:
            drainer.close()
    try:
        os.rmdir(directory)   # only when empty
    except OSError:
        pass
    return report


def _ended(stats: dict) -> bool:
    return bool(stats["closed"]) or not process_alive(stats["producer_pid"])
