"""``flowcept keeper run --workers N``: N keeper processes on one host.

One keeper is one core (read, validate, LMDB, acknowledge).  A host with
more cores runs several: each worker is a whole keeper, in its own process,
a member of the same consumer group (Redis: every shard's stream group;
Kafka: the topic's group, so ``kafka_partitions`` must be at least the
keepers of the group), writing its own store directory
``<store-dir>/worker-NN`` (LMDB takes one writer per environment: separate
directories never wait for each other).  Each worker's peers are the other
workers' directories, so a batch one worker committed before a crash is not
stored again by the worker the source hands it to.

The supervisor forwards SIGTERM/SIGINT to the workers (each commits and
acknowledges what it holds) and SIGUSR1 (read what is left, then exit), shows their summed progress on a terminal, and
when one worker dies the others are stopped and the command exits non-zero:
start it again with the same ``--name`` and ``--store-dir`` and every worker
resumes its own pending batches.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Callable, List, Optional

from flowcept.keeper.service import (COUNTERS, PROGRESS_INTERVAL_S, STATUS_PREFIX, STATUS_SUFFIX,
                                     _safe, progress_line)

log = logging.getLogger("flowcept.keeper.workers")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def worker_name(name: str, k: int) -> str:
    return f"{name}-w{k:02d}"


def worker_dir(location: str, k: int) -> str:
    return os.path.join(location, f"worker-{k:02d}")


class Workers:
    """``Workers(make_keeper, n).run(max_idle_s)``: ``make_keeper(k)`` builds
    worker k's Keeper (in the worker process, after the fork)."""

    def __init__(self, make_keeper: Callable[[int], object], n: int, name: str,
                 status_dirs: List[str], progress: Optional[bool] = None,
                 progress_interval: float = PROGRESS_INTERVAL_S):
        self.make_keeper = make_keeper
        self.n = n
        self.name = name
        self.status_dirs = status_dirs        # worker k writes its status file in status_dirs[k]
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.progress_interval = progress_interval
        self.procs: List = []
        self.stopping = False
        self.failed: Optional[str] = None

    def _child(self, k: int, max_idle_s: Optional[float], wait_s: float) -> None:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        keeper = self.make_keeper(k)
        sys.exit(keeper.run(max_idle_s=max_idle_s, wait_s=wait_s))

    def _stop(self, *_args) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _finish(self, *_args) -> None:
        self._signal_all(signal.SIGUSR1)

    def _signal_all(self, sig) -> None:
        for p in self.procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass

    def counts(self) -> dict:
        """The workers' summed counters and rate (from their status files)."""
        total = {name: 0 for name, _ in COUNTERS}
        rate, lag = 0.0, None
        for k, d in enumerate(self.status_dirs):
            path = os.path.join(d, f"{STATUS_PREFIX}{_safe(worker_name(self.name, k))}{STATUS_SUFFIX}")
            try:
                with open(path) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            for key in total:
                total[key] += int(doc.get(key) or 0)
            rate += float(doc.get("records_per_s") or 0) if doc.get("running") else 0.0
            if doc.get("lag") is not None:
                lag = max(lag or 0, int(doc["lag"]))
        total["records_per_s"] = rate
        total["lag"] = lag
        return total

    def run(self, max_idle_s: Optional[float] = None, wait_s: float = 0.0) -> int:
        ctx = multiprocessing.get_context("fork")
        old = {sig: signal.signal(sig, self._finish if sig == signal.SIGUSR1 else self._stop)
               for sig in _SIGNALS}
        # the workers start with these signals blocked, and unblock them once
        # their own handlers are in place (no window where a worker runs ours)
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for k in range(self.n):
                p = ctx.Process(target=self._child, args=(k, max_idle_s, wait_s),
                                name=worker_name(self.name, k))
                p.start()
                self.procs.append(p)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        shown = False
        last = time.monotonic()
        try:
            while any(p.is_alive() for p in self.procs):
                time.sleep(0.2)
                for k, p in enumerate(self.procs):
                    if not p.is_alive() and p.exitcode not in (0, None) and not self.failed:
                        self.failed = (f"worker {worker_name(self.name, k)} (pid {p.pid}) exited "
                                       f"with {p.exitcode}")
                        if not self.stopping:
                            log.error("keeper %s: %s; stopping the others", self.name, self.failed)
                            self._stop()
                if self.progress and time.monotonic() - last >= self.progress_interval:
                    last = time.monotonic()
                    c = self.counts()
                    sys.stderr.write("\r" + progress_line(f"{self.name} ({self.n} workers)", c,
                                                          c["records_per_s"], c["lag"]) + "  ")
                    sys.stderr.flush()
                    shown = True
        finally:
            for p in self.procs:
                p.join()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if shown:
                sys.stderr.write("\n")
        return 0 if self.failed is None else 1
