"""A plain progress bar on stderr for long offline work (compaction, spool
replay, recovery): shown only on a terminal, and only once the work has
run longer than ``delay_s``, so short runs and logs stay clean."""
from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    def __init__(self, total: Optional[int], enabled: Optional[bool] = None,
                 label: str = "working", unit: str = "records", delay_s: float = 2.0):
        self.total = total if total is None else max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label, self.unit, self.delay_s = label, unit, delay_s
        self.done = self.records = 0
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done: int, records: int = 0, force: bool = False) -> None:
        self.done += done
        self.records += records
        if not self.enabled:
            return
        now = time.perf_counter()
        if (not force and now - self.last < 0.1) or now - self.t0 < self.delay_s:
            return
        self.last, self.shown = now, True
        rate = self.records / max(now - self.t0, 1e-9)
        if self.total is None:
            head = f"{self.label}"
        else:
            frac = min(self.done / self.total, 1.0)
            width = 30
            fill = int(frac * width)
            bar = "=" * fill + (">" if fill < width else "") + " " * (width - fill - 1)
            head = f"{self.label} [{bar}] {frac * 100:5.1f}%"
        sys.stderr.write(f"\r{head}  {self.records:,} {self.unit}  {rate / 1e6:.2f} M/s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.shown:
            self.update(0, 0, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
