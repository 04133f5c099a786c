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
import os
from dataclasses import dataclass, field
from typing import List, Optional

from flowcept.config import load_config
from flowcept.osutil import process_alive


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
                rings: Optional[List[str]] = None) -> RecoveryReport:
    """``rings``: only these ring files of the job's ring dir (the epilog passes the ones it
    has vetted); default every ``*.ring`` there."""
    from flowcept.record import job as jobs
    from flowcept.node.drain import Drainer, remove_ring_files
    from flowcept.native.ring import Ring, RingError
    from flowcept.transport import open_transport
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
    drainer = Drainer(config, open_transport(config.transport, config, jobs.job_info(config, job)))
    try:
        for path in paths:
            try:
                ring = Ring.open(path)
            except RingError as e:
                report.errors.append(f"{path}: {e.strerror}")
                continue
            st = ring.stats()
            if not _ended(st):
                report.skipped_live.append(path)
                ring.close()
                continue
            drainer.rings[path] = ring
        report.records = drainer.drain_all()
        report.rings = len(drainer.rings)
        for path, ring in drainer.rings.items():
            report.torn += ring.stats()["torn"]
    finally:
        drained = list(drainer.rings)
        drainer.close()
    if report.ok:
        for path in drained:
            remove_ring_files(path)
        try:
            os.rmdir(directory)
        except OSError:
            pass
    return report


def follow_job(job: str, config=None, stop=None, exit_when_idle_s: Optional[float] = None,
               poll_s: Optional[float] = None) -> RecoveryReport:
    """The node leader of a job whose ranks have no Python leader (C, C++,
    Fortran codes using the C API): drains every ring that appears in the
    job's ring directory while the job runs, retires a ring (drained, files
    removed) once its producer closed it or died, and returns when ``stop``
    (a threading.Event) is set, or after ``exit_when_idle_s`` seconds with no
    ring left once at least one was seen.  Run one per node, e.g.
    ``srun --ntasks-per-node=1 --overlap flowcept drain $SLURM_JOB_ID &``.
    Never point it at a job whose ranks use flowcept.mpi.instrument: those
    rings already have a consumer (their leader)."""
    import threading
    import time
    from flowcept.record import job as jobs
    from flowcept.node.drain import Drainer, remove_ring_files
    from flowcept.native.ring import RingError
    from flowcept.transport import open_transport
    config = config or load_config()
    stop = stop or threading.Event()
    poll = poll_s if poll_s is not None else config.drain_interval_ms / 1000
    directory = jobs.ring_dir(config, job)
    report = RecoveryReport(job=job, ring_dir=directory, verb="drained")
    drainer = Drainer(config, open_transport(config.transport, config, jobs.job_info(config, job)))
    retired = set()

    def adopt_new():
        for path in sorted(glob.glob(os.path.join(directory, "*.ring"))):
            if path not in drainer.rings and path not in retired:
                try:
                    drainer.adopt(path)
                except RingError as e:       # e.g. still being created: next round
                    if e.errno not in (errno.EBADMSG, errno.ENOENT):
                        report.errors.append(f"{path}: {e.strerror}")
                        retired.add(path)

    def retire_ended():
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

    idle_since = None
    try:
        while not stop.is_set():
            adopt_new()
            report.records += drainer.drain_once(lazy=True)
            retire_ended()
            if exit_when_idle_s is not None and retired and not drainer.rings:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= exit_when_idle_s:
                    break
            else:
                idle_since = None
            stop.wait(poll)
        adopt_new()                     # rings that appeared since the last round
        report.records += drainer.drain_all()
        retire_ended()
        report.rings = len(retired) + len(drainer.rings)
        report.skipped_live = list(drainer.rings)   # still open at exit: left for the epilog
    finally:
        drainer.close()
    try:
        os.rmdir(directory)   # only when empty
    except OSError:
        pass
    return report


def _ended(stats: dict) -> bool:
    return bool(stats["closed"]) or not process_alive(stats["producer_pid"])
