"""The leaders capture asks for (registry group ``flowcept.leaders``).

A capturing process that drains rings (its own, or its node's under MPI)
gets its Drainer from here, with the configured transport opened through
the registry.  Capture names the leader configured (``leader``: ``process``, the
default, in flowcept.node.helper, or ``thread``, here) and never imports
this layer: a site can register another leader without touching capture.

With ``local_copy`` and a transport other than the embedded one, every batch
is also written into the run directory's store (the embedded transport),
before it is published: what a process recorded stays readable on its node
whatever consumes the transport (Flowcept's in-memory buffer, read back).
"""
from __future__ import annotations

from flowcept import registry
from flowcept.node.drain import Drainer


class LocalCopy:
    """A transport that writes each batch into a local store first, then
    publishes it through another transport; flush() commits the local store,
    then flushes the other.  Failures are the other transport's (its spool
    fallback, take_unflushed); the local store skips a batch it already has."""

    def __init__(self, primary, local):
        self.primary = primary
        self.local = local
        self.name = primary.name
        self.spool_fallback = primary.spool_fallback
        self.job = primary.job
        self.config = primary.config

    def publish(self, key, frame) -> None:
        self.local.publish(key, frame)
        self.primary.publish(key, frame)

    def flush(self) -> None:
        self.local.flush()
        self.primary.flush()

    def take_unflushed(self):
        return self.primary.take_unflushed()

    def close(self) -> None:
        try:
            self.local.close()
        finally:
            self.primary.close()

    def __getattr__(self, name):   # the primary's extras (store, location, ...)
        return getattr(self.primary, name)


def open_transport(config, job):
    """The configured transport, with a local copy when ``local_copy`` asks for one."""
    primary = registry.load("transport", config.transport)(config, job)
    if not config.local_copy or config.transport == "embedded":
        return primary
    try:
        local = registry.load("transport", "embedded")(config.replace(store="lmdb", store_dir=""), job)
    except BaseException:
        primary.close()
        raise
    return LocalCopy(primary, local)


def open_leader(config, job) -> Drainer:
    """A Drainer publishing through ``config.transport`` (not yet started),
    run by the capturing process (the ``thread`` leader)."""
    return Drainer(config, open_transport(config, job))
