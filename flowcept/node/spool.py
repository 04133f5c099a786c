"""The node-local spool: where a leader's batches wait while the transport is down.

A spool is a directory (0700) holding one file per batch, named by the
batch key in hex (``<48 hex>.batch``, mode 0600), containing the frame as
published.  Writing is crash-safe: temp name (O_EXCL, O_NOFOLLOW) -> write
-> fsync -> rename -> fsync of the directory; ``put`` returns only then, so
the leader may release the ring space of a spooled batch.

Replay publishes the files in key order, flushes the transport, checks
that the destination confirmed every one of them (the transport's
``delivered`` count rose by as many: a transport that does not count, or
counts fewer, gets nothing deleted), and only then removes the files it
flushed (and fsyncs the directory).  A crash
mid-replay leaves the files in place: they are published again on the next
replay, and the keeper's store skips the batch keys it already has, so
nothing is lost and nothing is stored twice.

Default location: ``<run_dir>/<job>/spool/<node>``; with ``spool_dir`` set,
``<spool_dir>/flowcept-<uid>/<job>/<node>`` (per user, per job, per node).
"""
from __future__ import annotations

import logging
import os
import time
from typing import List, Optional, Tuple

from flowcept.progress import Progress

# Batches published per flush while replaying: large enough to amortise a
# round trip, small enough that a failure re-sends little.
REPLAY_GROUP = 64

log = logging.getLogger("flowcept.node.spool")

SUFFIX = ".batch"
KEY_BYTES = 24


def spool_dir_for(config, job) -> str:
    """The spool directory of a job on this node."""
    if config.spool_dir:
        return os.path.join(os.path.abspath(config.spool_dir), f"flowcept-{os.geteuid()}",
                            job.job_name, job.node)
    return os.path.join(job.run_dir, "spool", job.node)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One node's spool directory (created on first put)."""

    def __init__(self, directory: str, retry_ms: int = 1000):
        self.dir = directory
        self.retry_s = retry_ms / 1000
        self.spooled = 0        # batches written (this process)
        self.replayed = 0       # batches replayed and removed (this process)
        self.corrupt = 0        # files that failed validation on replay (renamed *.corrupt)
        self._next_try = 0.0
        self._ready = False
        self.last_error = ""    # why the last replay stopped early

    @classmethod
    def for_job(cls, config, job) -> "Spool":
        return cls(spool_dir_for(config, job), config.spool_retry_ms)

    # -- writing --------------------------------------------------------
    def _ensure_dir(self) -> None:
        if not self._ready:
            from flowcept.osutil import private_dir
            private_dir(self.dir)
            self._ready = True

    def path_of(self, key: bytes) -> str:
        return os.path.join(self.dir, bytes(key).hex() + SUFFIX)

    def put(self, key: bytes, frame) -> str:
        """Writes one batch durably; returns only after fsync of file and dir."""
        self._ensure_dir()
        final = self.path_of(key)
        from flowcept.osutil import atomic_write
        atomic_write(final, frame, fsync=True)
        self.spooled += 1
        return final

    # -- reading --------------------------------------------------------
    def keys(self) -> List[bytes]:
        """Spooled batch keys in key order."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(SUFFIX) and len(name) == 2 * KEY_BYTES + len(SUFFIX):
                try:
                    out.append(bytes.fromhex(name[:-len(SUFFIX)]))
                except ValueError:
                    continue
        out.sort()
        return out

    def __len__(self) -> int:
        return len(self.keys())

    def read(self, key: bytes) -> bytes:
        fd = os.open(self.path_of(key), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    # -- replay ---------------------------------------------------------
    def due(self) -> bool:
        """Whether a replay attempt is due (rate-limited after a failure)."""
        return time.monotonic() >= self._next_try

    def replay(self, transport, max_batches: Optional[int] = None,
               group: Optional[int] = None, progress: Optional[bool] = False) -> Tuple[int, int]:
        """Publishes spooled batches in key order; removes each group of files
        only after ``transport.flush()`` succeeded.  Returns (batches, records)
        replayed.  Stops quietly (files kept, next try after retry_ms) when
        the transport is unavailable.  ``progress``: a bar on stderr (None:
        when it is a terminal) once the replay runs longer than 2 s."""
        from flowcept.errors import TransportUnavailable
        from flowcept.native.batch import Batch, BatchError
        keys = self.keys()
        if max_batches is not None:
            keys = keys[:max_batches]
        if not keys:
            return 0, 0
        group = group or REPLAY_GROUP
        done = records = 0
        where = transport.destination() if hasattr(transport, "destination") else "?"
        bar = Progress(len(keys), progress, "replaying the spool")
        try:
            for i in range(0, len(keys), group):
                sent: List[bytes] = []
                recs = 0
                for key in keys[i:i + group]:
                    try:
                        frame = self.read(key)
                    except FileNotFoundError:
                        continue     # replayed concurrently (e.g. by `flowcept keeper replay`)
                    try:
                        batch = Batch(frame)
                    except BatchError as e:
                        self._set_aside(key, e)
                        continue
                    if not sent:
                        before = getattr(transport, "delivered", None)
                    transport.publish(key, frame)
                    sent.append(key)
                    recs += len(batch)
                transport.flush()
                if sent:
                    after = getattr(transport, "delivered", None)
                    if before is None or after is None:
                        raise TransportUnavailable(
                            f"{where} does not count confirmed batches (transport "
                            f"{getattr(transport, 'name', '?')}), so nothing is deleted")
                    if after - before < len(sent):
                        raise TransportUnavailable(
                            f"{where} confirmed {after - before} of {len(sent)} batches")
                for key in sent:
                    try:
                        os.unlink(self.path_of(key))
                    except FileNotFoundError:
                        pass
                if sent:
                    _fsync_dir(self.dir)
                done += len(sent)
                records += recs
                self.replayed += len(sent)
                bar.update(len(sent), recs)
        except TransportUnavailable as e:
            self._next_try = time.monotonic() + self.retry_s
            drop = getattr(transport, "take_unflushed", None)
            if drop is not None:
                drop()              # still in the spool files: nothing to re-spool
            self.last_error = str(e)
            log.info("flowcept spool: not replayed to %s (%s); %d batch(es) wait in %s",
                     where, e, len(self.keys()), self.dir)
        else:
            self._next_try = 0.0
        finally:
            bar.close()
        return done, records

    def _set_aside(self, key: bytes, err) -> None:
        """A file that is not a valid frame (disk damage): renamed, never published."""
        path = self.path_of(key)
        os.replace(path, path + ".corrupt")
        self.corrupt += 1
        log.error("flowcept spool: %s is not a valid batch (%s); renamed to *.corrupt", path, err)

    def note_failure(self) -> None:
        self._next_try = time.monotonic() + self.retry_s


def replay_dir(directory: str, transport) -> Tuple[int, int, int]:
    """Replays every spool directory at or below ``directory`` (after a job:
    ``flowcept keeper replay``).  Returns (batches, records, left)."""
    batches = records = left = 0
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        if any(f.endswith(SUFFIX) for f in files):
            sp = Spool(root)
            b, r = sp.replay(transport, progress=None)
            batches += b
            records += r
            left += len(sp.keys())
            if sp.last_error and sp.keys():
                log.warning("flowcept spool: %d batch(es) kept in %s: %s", len(sp.keys()), root,
                            sp.last_error)
    return batches, records, left
