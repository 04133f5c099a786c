"""The leader's loop: drain rings (and their spill files) into a transport.

Order of operations per pass, which is what makes it lossless:
  pack (C, GIL released; the packed range is recorded in the ring) ->
  publish -> flush (durable at the destination) -> release ring space.
A crash anywhere before release leaves the records in the ring, and the
next consumer re-packs exactly the same batch (same id), which the store
skips if it already has it.
"""
from __future__ import annotations

import errno
import glob
import json
import logging
import os
import threading
import time
from typing import Dict, Optional

from flowcept.native import ffi, lib
from flowcept.native.ring import Ring, RingError
from flowcept.errors import TransportUnavailable
from flowcept.node.status import STATUS_EVERY_S, status_path, write_status
from flowcept.osutil import process_alive
from flowcept.progress import Progress

log = logging.getLogger("flowcept.node.drain")


class SpillCursor:
    """Progress of replaying a ring's spill file, kept beside it.  The range
    being published is written before publishing, so that a re-run re-packs
    it identically (same batch id)."""

    def __init__(self, spill_path: str):
        self.path = spill_path + ".cursor"
        self.offset, self.pending = 0, 0
        try:
            with open(self.path) as f:
                state = json.load(f)
            self.offset, self.pending = int(state["offset"]), int(state["pending"])
        except (OSError, ValueError, KeyError):
            pass

    def save(self, offset: int, pending: int) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"offset": offset, "pending": pending}, f)
        os.replace(tmp, self.path)
        self.offset, self.pending = offset, pending


class Drainer:
    """Drains a set of rings into one transport (single consumer per ring)."""

    def __init__(self, config, transport, spool=None):
        self.config = config
        self.transport = transport
        # -- spool fallback: where batches go when the transport is down.
        # Transports that can go down declare ``spool_fallback = True``; they get
        # the job's node-local spool unless the caller passes one.
        if spool is None and transport.spool_fallback:
            from flowcept.node.spool import Spool
            spool = Spool.for_job(config, transport.job)
        self.spool = spool
        self.rings: Dict[str, Ring] = {}
        self.buf = ffi.new("char[]", config.batch_bytes)
        self.consumed = ffi.new("uint64_t *")
        self._stats = ffi.new("fc_ring_stats *")
        self._last_publish: Dict[str, float] = {}   # ring path -> time of its last batch
        self.records = 0
        self.batches = 0
        self._lock = threading.Lock()   # one pass at a time (thread + final drain)
        self.due_share = 4   # a lazy pass takes a ring once 1/due_share of it is full
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._status_path = None   # flowcept.node.status: counters for `flowcept metrics`
        self._status_at = 0.0
        job = getattr(transport, "job", None)
        if job is not None and getattr(job, "job_name", None):
            self._status_path = status_path(config, job.job_name, job.node)

    # -- ring set -------------------------------------------------------
    def adopt(self, path: str) -> Ring:
        """Opens a ring as its consumer (taking its consumer lock)."""
        ring = self.rings.get(path)
        if ring is None:
            ring = Ring.open(path)
            if not ring.lock_consumer():
                ring.close()
                raise RingError(errno.EBUSY, "another live process drains this ring", path)
            self.rings[path] = ring
        return ring

    def adopt_dir(self, directory: str) -> int:
        """Adopts every ring file of a directory (the rings of a node's ranks)
        that no other live process drains."""
        found = 0
        for path in sorted(glob.glob(os.path.join(directory, "*.ring"))):
            if path not in self.rings:
                try:
                    self.adopt(path)
                except RingError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    continue
                found += 1
        return found

    # -- one pass -------------------------------------------------------
    # -- spool interaction (issue #4) ---------------------------------------
    # Invariant: a batch's ring space is released only after _flush() returned,
    # i.e. after the batch is durable at the transport (flush ok) or in the
    # spool (file and dir fsync'd).  A transport keeps what it accepted but
    # has not confirmed; ``take_unflushed()`` hands those (key, bytes) back
    # after a failure, and they are spooled with the failing batch.
    def _spill_unflushed(self) -> None:
        for key, frame in self.transport.take_unflushed():
            self.spool.put(key, frame)
        self.spool.note_failure()

    def _publish(self, key: bytes, frame) -> None:
        try:
            self.transport.publish(key, frame)
        except TransportUnavailable:
            if self.spool is None:
                raise
            self._spill_unflushed()
            self.spool.put(key, frame)

    def _flush(self) -> None:
        try:
            self.transport.flush()
        except TransportUnavailable:
            if self.spool is None:
                raise
            self._spill_unflushed()

    def replay_spool(self, force: bool = False) -> int:
        """Replays spooled batches when the transport is back (rate-limited by
        spool_retry_ms after a failure); returns records replayed."""
        sp = self.spool
        if sp is None or not (force or sp.due()) or not sp.keys():
            return 0
        with self._lock:
            _, records = sp.replay(self.transport)
        return records
    # -- end of spool interaction -------------------------------------------

    def drain_once(self, max_batches: int = 64, lazy: bool = False) -> int:
        """One pass over all rings; returns records drained."""
        with self._lock:
            return self._drain_locked(max_batches, lazy)

    def _drain_locked(self, max_batches: int, lazy: bool = False) -> int:
        """Rounds of: pack one batch per ring, publish each, flush once,
        release each ring.  ``lazy`` (the background thread) skips a ring
        whose backlog is under a quarter of the ring and younger than
        batch_latency_ms, so that a slow trickle of records is published in
        fewer, larger batches."""
        cap, maxrec = self.config.batch_bytes, self.config.batch_records
        total = 0
        now = time.monotonic()
        latency = self.config.batch_latency_ms / 1000
        rings = list(self.rings.values())
        if lazy:
            rings = [r for r in rings if self._due(r, now, latency)]
        for _ in range(max_batches):
            packed = []
            for ring in rings:
                n = lib.fc_ring_pack(ring.handle, self.buf, cap, maxrec, self.consumed)
                if n == 0:
                    continue
                if n < 0:
                    raise OSError(-n, f"fc_ring_pack: {os.strerror(-n)}", ring.path)
                hdr = ffi.cast("fc_batch_header *", self.buf)
                self._publish(_key(hdr), ffi.buffer(self.buf, n))
                packed.append((ring, hdr.seq + self.consumed[0], hdr.record_count))
            if not packed:
                break
            self._flush()
            for ring, end, count in packed:
                lib.fc_ring_release(ring.handle, end)
                self._last_publish[ring.path] = now
                total += count
            self.batches += len(packed)
            rings = [ring for ring, _, _ in packed]
            if lazy:   # what came in meanwhile waits to make a batch of its own size
                now = time.monotonic()
                rings = [r for r in rings if self._due(r, now, latency)]
        self.records += total
        if self._status_path is not None and now - self._status_at >= STATUS_EVERY_S:
            self.write_status(True)
        return total

    def write_status(self, running: bool) -> None:
        """Publishes records/batches drained (flowcept.node.status); a failure
        to write is logged once and never stops the drain."""
        first = self._status_at == 0.0
        self._status_at = time.monotonic()
        job = self.transport.job
        doc = {"job": job.job_name, "node": job.node, "pid": os.getpid(), "records": self.records,
               "batches": self.batches, "running": running, "updated": time.time()}
        try:
            write_status(self._status_path, doc, prune=first)
        except OSError as e:
            if first:
                log.warning("flowcept leader: cannot write its status %s (%s); flowcept metrics "
                            "will not show its counters", self._status_path, e)

    def _due(self, ring: Ring, now: float, latency: float) -> bool:
        lib.fc_ring_get_stats(ring.handle, self._stats)
        backlog = self._stats.head - self._stats.tail
        if backlog == 0:
            return False
        if backlog * self.due_share >= self._stats.capacity or self._stats.closed:
            return True
        return now - self._last_publish.setdefault(ring.path, now) >= latency

    def drain_spills(self) -> int:
        """Replays the spill files of the adopted rings; returns records."""
        total = 0
        with self._lock:
            for ring in list(self.rings.values()):
                total += self._drain_spill(ring)
        self.records += total
        return total

    def _drain_spill(self, ring: Ring) -> int:
        spill = ring.spill_path
        if not os.path.exists(spill):
            return 0
        cursor = SpillCursor(spill)
        total = 0
        while True:
            offset = cursor.offset
            limit = cursor.pending if cursor.pending > offset else 0
            n = lib.fc_spill_pack(ring.handle, spill.encode(), offset, limit, self.buf,
                                  self.config.batch_bytes, self.config.batch_records, self.consumed)
            if n <= 0:
                if n < 0:
                    raise OSError(-n, f"fc_spill_pack: {os.strerror(-n)}", spill)
                return total
            end = offset + self.consumed[0]
            cursor.save(offset, end)
            hdr = ffi.cast("fc_batch_header *", self.buf)
            self._publish(_key(hdr), ffi.buffer(self.buf, n))
            self._flush()
            total += hdr.record_count
            cursor.save(end, end)

    def drain_all(self, progress: Optional[bool] = False, label: str = "draining") -> int:
        """Drains until every ring is empty, spill files included.
        ``progress``: a bar on stderr (None: when it is a terminal) once the
        drain runs longer than 2 s (recovery of a large job)."""
        bar = Progress(None, progress, label)
        total = 0
        while True:
            n = self.drain_once(max_batches=256)   # rounds, so that progress shows
            n += self.drain_spills()
            total += n
            bar.update(0, n)
            if n == 0:
                bar.close()
                self.replay_spool(force=True)   # last chance; what stays is logged
                if self.spool is not None and self.spool.keys():
                    log.warning("flowcept: transport unavailable; %d batch(es) stay in the spool "
                                "%s; replay them with `flowcept keeper replay --spool-dir "
                                "DIR --url URL`", len(self.spool.keys()), self.spool.dir)
                return total

    # -- background thread ----------------------------------------------
    def start(self, first_wait_s: Optional[float] = None,
              longest_wait_s: Optional[float] = None) -> None:
        """Drains in a background thread.  After an empty pass it waits
        ``first_wait_s``, doubling up to ``longest_wait_s`` while nothing
        comes (both default to drain_interval_ms: a steady poll)."""
        idle = self.config.drain_interval_ms / 1000
        first = idle if first_wait_s is None else first_wait_s
        longest = idle if longest_wait_s is None else max(first, longest_wait_s)
        self._thread = threading.Thread(target=self._run, args=(first, longest),
                                        name="flowcept-drain", daemon=True)
        self._thread.start()

    def _run(self, first: float, longest: float) -> None:
        wait = first
        while not self._stop.is_set():
            try:
                n = self.drain_once(lazy=True)
            except Exception:  # keep draining: records stay in the ring
                log.exception("flowcept drain pass failed; retrying")
                n = 0
            if n:
                wait = first
                continue
            try:
                self.replay_spool()
            except Exception:
                log.exception("flowcept spool replay failed; retrying")
            # a plain sleep: Event.wait allocates a lock per call, which was most of
            # an idle leader's CPU; stop() waits at most ``longest`` for this thread
            time.sleep(wait)
            wait = min(wait * 2, longest)

    def stop(self) -> int:
        """Stops the thread and drains everything left; returns records drained."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        n = self.drain_all()
        if self._status_path is not None:
            self.write_status(False)
        return n

    def wait_rings(self, timeout_s: float) -> list:
        """Waits (at most ``timeout_s``) until every ring is closed by its
        producer or its producer died, draining meanwhile; returns the paths
        of the rings still open."""
        deadline = time.monotonic() + timeout_s
        pending = dict(self.rings)
        while pending:
            for path, ring in list(pending.items()):
                st = ring.stats()
                if st["closed"] or not process_alive(st["producer_pid"]):
                    pending.pop(path)
            if not pending or time.monotonic() > deadline:
                break
            self.drain_once()
            time.sleep(self.config.drain_interval_ms / 1000)
        return list(pending)

    def finish(self, timeout_s: float) -> list:
        """The end of a leader: ``wait_rings``, then drains everything,
        removes the files of the ended rings and closes the transport.
        Returns the paths of rings still open (their records stay for
        recovery)."""
        leftover = self.wait_rings(timeout_s)
        self.stop()
        for path, ring in list(self.rings.items()):
            ring.close()
            if path not in leftover:
                remove_ring_files(path)
        self.rings.clear()
        self.transport.close()
        return leftover

    def close(self, unlink: bool = False) -> None:
        for path, ring in list(self.rings.items()):
            ring.close()
            if unlink:
                remove_ring_files(path)
        self.rings.clear()
        self.transport.close()


def _key(hdr) -> bytes:
    from flowcept.native.batch import batch_key
    return batch_key(hdr.job_id, hdr.ring_uid, hdr.seq)


def remove_ring_files(path: str) -> None:
    for p in (path, path + ".spill", path + ".spill.cursor"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def wait_for(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
