"""The read loop the keeper and the bridge share: read each source in turn,
hand what came to ``handle``, back off while the transport is down, stop on
``stop()``, SIGTERM or SIGINT (or when idle, for tools and tests: idle means
no entries for that long and none the sources report unread in the hub).
``finish()`` or SIGUSR1 means "the producers are done": read on until the
sources have had nothing for FINISH_IDLE_S, then stop (a job script sends
it after its application step, so nothing left in the hub is abandoned).

What is done with the entries (check and store, or forward), and when they
are acknowledged, is the subclass's: ``handle`` acknowledges or redelivers
the entries it gets."""
from __future__ import annotations

import signal
import threading
import time
from typing import List, Optional

from flowcept.errors import TransportUnavailable

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
FINISH_IDLE_S = 1.0
IDLE_WAIT_FACTOR = 10


class SourceLoop:
    """Subclasses set ``count`` and ``block_ms``, fill ``sources`` in
    ``open()`` and define ``handle``, ``read_failed`` and ``close``."""

    # True: a read that succeeds ends the back-off (the back-off is only for
    # the source).  False: only a ``handle`` that succeeds ends it (the
    # back-off also covers a destination, which an empty read says nothing of).
    read_ends_backoff = True

    count: int
    block_ms: int

    def __init__(self):
        self._stop = threading.Event()
        self._finish_at: Optional[float] = None
        self.sources: List = []
        # rounds over the sources, and the last one in which every read came
        # back empty: an in-process consumer waits on them to know that what was
        # published before it asked is handled (wait_caught_up, finish)
        self._rounds = threading.Condition()
        self._round = 0
        self._last_empty = -1
        self._finish_from: Optional[int] = None

    # -- what subclasses do ----------------------------------------------------
    def open(self) -> None:
        """Opens the sources (and whatever ``handle`` writes to)."""
        raise NotImplementedError

    def handle(self, src, entries) -> bool:
        """Does the work on one non-empty read; False: it failed and the
        loop backs off before the next read."""
        raise NotImplementedError

    def read_failed(self, err: TransportUnavailable, retry_in: float) -> None:
        """Counts and logs a read the transport refused (retried in ``retry_in`` s)."""
        raise NotImplementedError

    def after_round(self) -> None:
        """Called after each round over the sources."""

    def close(self) -> None:
        raise NotImplementedError

    # -- control -----------------------------------------------------------------
    def stop(self, *_args) -> None:
        self._stop.set()
        with self._rounds:
            self._rounds.notify_all()

    def wait_caught_up(self, timeout: Optional[float] = None) -> bool:
        """Waits until a round that began after this call read nothing from
        any source: everything published before the call is handled.  False
        on timeout (or when the loop stopped first)."""
        with self._rounds:
            target = self._round + 1
            return self._rounds.wait_for(
                lambda: self._last_empty >= target or self._stop.is_set(), timeout) \
                and self._last_empty >= target

    def finish(self) -> None:
        """Stops after the first round, begun after this call, that reads
        nothing: what was published before the call is handled first."""
        with self._rounds:
            self._finish_from = self._round + 1

    def finish(self, *_args) -> None:
        """Read what is left, then stop (see the module docstring)."""
        if self._finish_at is None:
            self._finish_at = time.monotonic()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, self.stop)
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self.finish)
        return old

    def run(self, max_idle_s: Optional[float] = None, wait_s: float = 0.0) -> int:
        """Reads until stopped (or idle for max_idle_s).  Returns 0.
        ``wait_s``: a source that cannot be reached at start is tried again
        for this long (a job script starting the hub beside the keeper)
        before TransportUnavailable is raised."""
        old = self._install_signals()
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    self.open()
                    break
                except TransportUnavailable:
                    self.close()
                    if self._stop.is_set() or time.monotonic() >= deadline:
                        raise
                    self._stop.wait(0.5)
            self._read_until_stopped(max_idle_s)
            return 0
        finally:
            self.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _unread(self) -> int:
        """Entries the sources say are still unacknowledged in the hub (0
        where no source can tell)."""
        total = 0
        for src in self.sources:
            try:
                total += src.unread() or 0
            except TransportUnavailable:
                pass
        return total

    def _read_until_stopped(self, max_idle_s: Optional[float]) -> None:
        idle_since = time.monotonic()
        # exiting when idle waits for the hub's unread entries (Source.unread),
        # but no longer than IDLE_WAIT_FACTOR idle periods in all
        hard_stop = None
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            with self._rounds:
                self._round += 1
                this_round = self._round
            got = 0
            failed = False
            for src in list(self.sources):
                if self._stop.is_set():
                    break
                try:
                    # one source: wait at the source; several: poll each, wait below
                    block = self.block_ms if len(self.sources) == 1 else None
                    entries = src.read(self.count, block)
                except TransportUnavailable as e:
                    failed = True
                    self.read_failed(e, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                if self.read_ends_backoff:
                    backoff = FIRST_BACKOFF_S
                if not entries:
                    continue
                got += len(entries)
                if self.handle(src, entries):
                    backoff = FIRST_BACKOFF_S
                else:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
            if not got and not failed:
                with self._rounds:
                    self._last_empty = this_round
                    self._rounds.notify_all()
                    if self._finish_from is not None and this_round >= self._finish_from:
                        break
            if got:
                idle_since = time.monotonic()
                hard_stop = None
            elif len(self.sources) > 1:
                self._stop.wait(self.block_ms / 1000 / len(self.sources))
            limit, since = max_idle_s, idle_since
            if self._finish_at is not None:
                limit = FINISH_IDLE_S if limit is None else min(limit, FINISH_IDLE_S)
                since = max(idle_since, self._finish_at)
            if limit is not None and time.monotonic() - since > limit:
                if self._finish_at is None and max_idle_s is not None:
                    now = time.monotonic()
                    if hard_stop is None:
                        hard_stop = now + IDLE_WAIT_FACTOR * max_idle_s
                    if now < hard_stop and self._unread() > 0:
                        idle_since = now - max_idle_s / 2    # look again shortly
                        continue
                break
            self.after_round()
