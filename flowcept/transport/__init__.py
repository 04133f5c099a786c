"""Transports: how a leader's batches leave the node, and how keepers read
them back.  Two small interfaces, complete here; one module per backend,
registered by entry point (groups ``flowcept.transports`` and
``flowcept.sources``, see flowcept.registry); ``null`` is the template.

Transport lifecycle (leader side; every backend follows it):
  1. ``__init__(config, job)`` connects or raises TransportUnavailable with
     the reason; it never blocks longer than a few seconds.
  2. ``publish(key, frame)`` hands over one validated batch frame (bytes or
     memoryview, which the caller may reuse after the call: copy if you keep
     it).  It raises TransportUnavailable when the destination cannot take
     it; the caller then spools the batch and does not release the ring.
  3. ``flush()`` returns only when every published batch is durable at the
     destination (committed, acknowledged); only then does the caller
     release ring space.  A failure raises TransportUnavailable.
  4. After a failure, ``take_unflushed()`` hands back every batch published
     but not confirmed, as ``(key, bytes)``; the caller spools them.  A
     transport that can go down sets ``spool_fallback = True``: the leader
     then gives it the job's node-local spool.
  5. ``close()`` flushes and frees resources; idempotent.
  6. ``delivered`` counts the batches the destination confirmed (XADD
     replies, delivery reports, committed keys), ``destination()`` names
     where they went (no password).  Whatever deletes the other copy of a
     batch (spool replay) checks that ``delivered`` rose by what it
     published; a transport that cannot tell leaves it None, and nothing is
     deleted behind it.

Source lifecycle (keeper side, exported beside its transport):
  1. ``Source.open_all(config, consumer)`` returns the sources a keeper reads
     (e.g. one per Redis shard); ``consumer`` is the keeper's stable name, so
     a restarted keeper resumes what it had been delivered.
  2. ``read(count, block_ms)`` returns up to ``count`` entries (``Entry``),
     waiting at most ``block_ms`` (None: do not wait).  Raises
     TransportUnavailable when the broker is down; the keeper retries.
  3. ``ack(entries)`` is called only for entries whose batches are committed
     in every store (or quarantined); never past an uncommitted one.
  4. ``redeliver(entries)``: these were not committed; deliver them again
     (to this consumer or, after it died, to another one).
  5. ``close()`` is idempotent; ``info()`` describes the source for status.

Routing: a transport with several destinations (Redis shards, Kafka
partitions) sends a (job, node) to ``route(job, n)``: node names that end in
a number (``nid001000``, ``node17``, ``cn-0042``) go round-robin by that
number, from an offset that a hash of (job, name prefix) picks, so the
consecutive nodes of a job fill the destinations evenly; other names go by a
hash of (job, node).  The same (job, node) always goes to the same place.
A transport that can route any (job, node) through one connection (the
bridge forwards many nodes) sets ``any_job = True`` and takes ``job=`` in
``publish``.
"""
from __future__ import annotations

import hashlib
import re
from typing import List, Optional, Tuple

from flowcept import registry
from flowcept.errors import TransportUnavailable
from flowcept.record.job import JobInfo

__all__ = ["Entry", "JobInfo", "Source", "Transport", "TransportUnavailable", "open_sources",
           "open_transport", "route", "RouteCache", "transport_for_url", "transport_names", "source_names"]

_TRAILING_NUMBER = re.compile(r"([0-9]{1,18})$")


def _mix(*parts: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return int.from_bytes(h.digest(), "little")


class RouteCache:
    """What a transport derives from a (job, node): its shard or partition and
    its routing fields, made once per pair by ``make(job)``; bounded, since a
    bridge forwards for any number of nodes."""
    LIMIT = 1 << 16

    def __init__(self, make):
        self._make = make
        self._memo: dict = {}

    def __call__(self, job: JobInfo):
        k = (job.job_name, job.node)
        r = self._memo.get(k)
        if r is None:
            if len(self._memo) >= self.LIMIT:
                self._memo.clear()
            r = self._memo[k] = self._make(job)
        return r

    def clear(self) -> None:
        self._memo.clear()


def route(job: JobInfo, n: int) -> int:
    """The destination (0..n-1) of a job's node: see the module docstring."""
    if n <= 1:
        return 0
    m = _TRAILING_NUMBER.search(job.node)
    if m:
        return (int(m.group(1)) + _mix(job.job_name, job.node[:m.start()])) % n
    return _mix(job.job_name, job.node) % n


class Transport:
    """Base class: see the lifecycle rules in the module docstring."""

    name = "base"
    spool_fallback = False   # True: the leader spools batches while this is down
    url_schemes = ()         # transport_url schemes this backend speaks (e.g. "redis")
    any_job = False          # True: publish(..., job=JobInfo) routes any (job, node)
    delivered: Optional[int] = None   # batches the destination confirmed (rule 6)

    def __init__(self, config, job: JobInfo):
        self.config = config
        self.job = job

    def destination(self) -> str:
        return self.name

    def publish(self, key: bytes, frame) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def take_unflushed(self) -> List[Tuple[bytes, bytes]]:
        return []

    def close(self) -> None:
        self.flush()


class Entry:
    """One delivered batch: ``frame`` (bytes or None when the message had
    none), ``key`` (the routing key, bytes or None), and where it came from."""
    __slots__ = ("frame", "key", "job", "node", "source", "id")

    def __init__(self, frame, key=None, job=None, node=None, source: str = "", id=None):
        self.frame, self.key, self.job, self.node, self.source, self.id = (
            frame, key, job, node, source, id)

    def routing(self) -> dict:
        def text(v):
            return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v
        return {"id": text(self.id) if self.id is not None else None,
                "key": bytes(self.key).hex() if isinstance(self.key, (bytes, bytearray)) else None,
                "job": text(self.job), "node": text(self.node), "source": self.source}


class Source:
    """Base class of the keeper side: see the module docstring."""

    name = "base"

    def __init__(self, config, consumer: str):
        self.config = config
        self.consumer = consumer

    @classmethod
    def open_all(cls, config, consumer: str) -> List["Source"]:
        return [cls(config, consumer)]

    def read(self, count: int, block_ms: Optional[int]) -> List[Entry]:
        raise NotImplementedError

    def ack(self, entries) -> None:
        raise NotImplementedError

    def redeliver(self, entries) -> None:
        pass

    def info(self) -> dict:
        return {"name": self.name}

    def unread(self) -> Optional[int]:
        """Entries in the hub that no reader of this source's group has
        acknowledged yet, or None where the transport cannot tell.  A keeper
        told to exit when idle stays while this is positive: in a consumer
        group, partitions of a killed member reach the others only after its
        session times out, so a quiet read does not mean nothing is left."""
        return None

    def close(self) -> None:
        pass


def transport_for_url(url: str, want_source: bool = False, prefer: Optional[str] = None) -> str:
    """The registered transport whose ``url_schemes`` include the URL's scheme
    (``prefer`` first, when it speaks it); ``want_source``: only transports
    with a keeper side.  One-line ConfigError when none does."""
    from flowcept.errors import ConfigError
    if "://" not in (url or ""):
        raise ConfigError(f"{url!r} is not a URL; e.g. redis://host:6379/0 or kafka://host:9092/topic")
    scheme = url.split("://", 1)[0]
    names = source_names() if want_source else transport_names()
    if prefer in names:
        names = [prefer] + [n for n in names if n != prefer]
    for name in names:
        try:
            cls = registry.load("transport", name)
        except Exception:
            continue
        if scheme in getattr(cls, "url_schemes", ()):
            return name
    side = "a keeper side (source)" if want_source else "a transport"
    raise ConfigError(f"no installed transport with {side} speaks {scheme}:// URLs; installed: "
                      f"{', '.join(names)} (pip install 'flowcept[kafka]' etc.)")


def transport_names() -> List[str]:
    return registry.names("transport")


def source_names() -> List[str]:
    return registry.names("source")


def open_transport(name: str, config, job: JobInfo) -> Transport:
    return registry.load("transport", name)(config, job)


def open_sources(name: str, config, consumer: str) -> List[Source]:
    try:
        cls = registry.load("source", name)
    except LookupError:
        raise LookupError(f"transport {name!r} has no keeper side: choose one of "
                          f"{', '.join(source_names())}") from None
    return cls.open_all(config, consumer)
