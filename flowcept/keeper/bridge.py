"""The bridge: forwards batches from one hub to another (federated hubs).

``Bridge(config, from_url, to_url).run()`` reads a site hub through its
keeper side (any Source, as a consumer-group member named ``name``) and
publishes every batch frame, unchanged and under its batch id, through any
Transport to a central hub.  Per read:
  1. each entry's batch id is taken from the frame header (the routing key
     must agree, as in the keeper; entries without a frame are counted and
     acknowledged: there is nothing to forward);
  2. the frames are published and the destination flushed (durable there);
  3. only then are the entries acknowledged at the source.
A crash or a destination outage before 3 leaves the entries pending at the
source: they are delivered again (to the restarted bridge under the same
name, or, for Redis, claimed by another bridge after keeper_claim_idle_ms)
and forwarded again.  That is at-least-once; the keepers behind the central
hub store each batch id once, so nothing is stored twice.

Order: a destination transport is opened per (job, node) of the entries, so
a Kafka destination keeps each node's batches in its own partition, in order
(a Redis destination picks its shard by node).  The frames are not validated
here (the keepers do, and quarantine with the reason); the bridge only reads
the 24-byte batch id from the header.

SIGTERM/SIGINT: stops reading, forwards and acknowledges what it holds.
"""
from __future__ import annotations

import logging
import struct
from collections import OrderedDict

from flowcept.errors import TransportUnavailable
from flowcept.keeper.loop import SourceLoop

log = logging.getLogger("flowcept.keeper.bridge")

HEADER_MIN = 56     # through record_count (the batch id sits at offsets 16..40)


def transport_for_url(url: str, want_source: bool = False) -> str:
    """The registered transport whose ``url_schemes`` include the URL's scheme."""
    from flowcept import registry
    from flowcept.errors import ConfigError
    if "://" not in (url or ""):
        raise ConfigError(f"{url!r} is not a URL; e.g. redis://host:6379/0 or kafka://host:9092/topic")
    scheme = url.split("://", 1)[0]
    names = registry.names("source") if want_source else registry.names("transport")
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


def _text(v) -> str:
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


class Bridge(SourceLoop):
    """``Bridge(config, from_url, to_url).run()`` until ``stop()`` (or
    SIGTERM/SIGINT); ``run(max_idle_s)`` also returns once idle that long."""

    read_ends_backoff = False    # the back-off also waits out the destination

    def __init__(self, config, from_url: str, to_url: str, name: str = "bridge",
                 count: int = 64, block_ms: int = 200, max_transports: int = 256):
        super().__init__()
        self.from_name = transport_for_url(from_url, want_source=True)
        self.to_name = transport_for_url(to_url)
        self.src_config = config.replace(transport=self.from_name, transport_url=from_url)
        self.dst_config = config.replace(transport=self.to_name, transport_url=to_url)
        self.name = name
        self.count = max(1, count)
        self.block_ms = block_ms
        self.max_transports = max(1, max_transports)
        self._dest: "OrderedDict[tuple, object]" = OrderedDict()
        self.counts = {"batches": 0, "bytes": 0, "reads": 0, "no_frame": 0, "redelivered": 0,
                       "dest_errors": 0, "source_errors": 0}

    # -- destination --------------------------------------------------------
    def _transport(self, job_name: str, job_id: int, node: str):
        from flowcept.record.job import JobInfo
        from flowcept.transport import open_transport
        k = (job_name, job_id, node)
        tr = self._dest.get(k)
        if tr is not None:
            self._dest.move_to_end(k)
            return tr
        tr = open_transport(self.to_name, self.dst_config,
                            JobInfo(job_name=job_name, job_id=job_id, node=node, run_dir=""))
        self._dest[k] = tr
        while len(self._dest) > self.max_transports:    # many nodes: keep the recent ones
            _, old = self._dest.popitem(last=False)
            try:
                old.close()
            except TransportUnavailable:
                pass
        return tr

    def _drop_dest(self) -> None:
        """After a failure: forget the destination transports (nothing they
        hold is acknowledged at the source, so it is delivered again)."""
        dest, self._dest = self._dest, OrderedDict()
        for tr in dest.values():
            tr.take_unflushed()
            try:
                tr.close()
            except Exception:
                pass

    def forward(self, src, entries) -> bool:
        """Publishes, flushes, acknowledges; False if the destination failed."""
        used = []
        try:
            for e in entries:
                frame = e.frame
                if frame is None or len(frame) < HEADER_MIN:
                    self.counts["no_frame"] += 1
                    continue
                job_id, ring_uid, seq = struct.unpack_from("<QQQ", frame, 16)
                key = struct.pack(">QQQ", job_id, ring_uid, seq)
                if e.key is not None and bytes(e.key) != key:
                    log.warning("bridge %s: routing key %s != frame key %s: forwarded under the "
                                "frame's (the keeper decides)", self.name, bytes(e.key).hex(), key.hex())
                tr = self._transport(_text(e.job) or f"{job_id:016x}", job_id, _text(e.node))
                tr.publish(key, frame)
                if tr not in used:
                    used.append(tr)
                self.counts["bytes"] += len(frame)
            for tr in used:
                tr.flush()
        except TransportUnavailable as err:
            self.counts["dest_errors"] += 1
            log.warning("bridge %s: destination %s: %s; %d entries stay pending at the source",
                        self.name, self.to_name, err, len(entries))
            self._drop_dest()
            src.redeliver(entries)
            self.counts["redelivered"] += len(entries)
            return False
        self.counts["batches"] += len(entries) - sum(
            1 for e in entries if e.frame is None or len(e.frame) < HEADER_MIN)
        try:
            src.ack(entries)
        except TransportUnavailable as err:   # forwarded again later: the keepers skip it
            self.counts["source_errors"] += 1
            log.warning("bridge %s: ack at the source failed (%s)", self.name, err)
        return True

    # -- the loop's parts -----------------------------------------------------
    def open(self) -> None:
        from flowcept.transport import open_sources
        self.sources = open_sources(self.from_name, self.src_config, self.name)

    def read_failed(self, err, retry_in: float) -> None:
        self.counts["source_errors"] += 1
        log.warning("bridge %s: source: %s; retrying in %.1fs", self.name, err, retry_in)

    def handle(self, src, entries) -> bool:
        self.counts["reads"] += 1
        return self.forward(src, entries)

    def close(self) -> None:
        for tr in list(self._dest.values()):
            try:
                tr.close()
            except Exception as e:
                log.warning("bridge %s: closing destination: %s", self.name, e)
        self._dest = OrderedDict()
        for src in self.sources:
            src.close()
        self.sources = []
