"""Recovery of what a job left on a node: rings of killed ranks, rings a
dead leader never drained, and their spill files.

Only rings whose producer has ended (closed, or its process is gone) are
taken: a live ring belongs to its leader (one consumer per ring).  Torn
records (a producer killed in the middle of a push) are skipped and
counted by the C consumer.  Re-running is harmless: a batch already in the
store has the same id and is skipped.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import List, Optional

from flowcept.config import load_config
from flowcept.jobs import process_alive


@dataclass
class RecoveryReport:
    job: str
    ring_dir: str
    rings: int = 0
    records: int = 0
    torn: int = 0
    skipped_live: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe(self) -> str:
        if not self.rings and not self.skipped_live and not self.errors:
            return f"job {self.job}: nothing to recover in {self.ring_dir}"
        parts = [f"job {self.job}: recovered {self.records} records from {self.rings} ring(s)"
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
    from flowcept import jobs
    from flowcept.drain import Drainer, remove_ring_files
    from flowcept.ring import Ring, RingError
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
            if not st["closed"] and process_alive(st["producer_pid"]):
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
