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
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from flowcept import registry
from flowcept.errors import TransportUnavailable
from flowcept.record.job import JobInfo

__all__ = ["Entry", "JobInfo", "Source", "Transport", "TransportUnavailable", "open_sources",
           "open_transport", "transport_names", "source_names"]


class Transport:
    """Base class: see the lifecycle rules in the module docstring."""

    name = "base"
    spool_fallback = False   # True: the leader spools batches while this is down
    url_schemes = ()         # transport_url schemes this backend speaks (e.g. "redis")

    def __init__(self, config, job: JobInfo):
        self.config = config
        self.job = job

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

    def close(self) -> None:
        pass


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
