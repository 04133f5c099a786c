"""The bridge: forwards batches from one hub to another (federated hubs).

``Bridge(config, from_url, to_url).run()`` reads a site hub through its
keeper side (any Source, as a consumer-group member named ``name``) and
publishes every batch frame, unchanged and under its batch id, through any
Transport to a central hub.  Per read:
  1. each entry's batch id is taken from the frame header (the routing key
     must agree, as in the keeper; entries without a frame are counted and
     acknowledged: there is nothing to forward);
  2. the frames are published and the destination flushed (durable there),
     and its count of confirmed batches (``Transport.delivered``) must have
     risen by as many (a destination that does not count gets nothing
     acknowledged);
  3. only then are the entries acknowledged at the source (Redis deletes them).
A crash or a destination outage before 3 leaves the entries pending at the
source: they are delivered again (to the restarted bridge under the same
name, or, for Redis, claimed by another bridge after keeper_claim_idle_ms)
and forwarded again.  That is at-least-once; the keepers behind the central
hub store each batch id once, so nothing is stored twice.

Order: each entry is published under its own (job, node), so a Kafka
destination keeps each node's batches in its partition, in order (a Redis
destination picks its shard by node).  Redis and Kafka destinations route
any (job, node) through one transport (one producer, one connection per
Redis instance), however many nodes the site has; a destination transport
without that (``any_job`` false) gets one transport per (job, node), the
``max_transports`` most recent kept open.  The frames are not validated
here (the keepers do, and quarantine with the reason); the bridge only reads
the 24-byte batch id from the header.

SIGTERM/SIGINT: stops reading, forwards and acknowledges what it holds.
"""
from __future__ import annotations

import logging
import struct
from collections import OrderedDict

from flowcept import registry
from flowcept.errors import TransportUnavailable
from flowcept.keeper.loop import SourceLoop
from flowcept.record.job import JobInfo
from flowcept.transport import transport_for_url

log = logging.getLogger("flowcept.keeper.bridge")

HEADER_MIN = 56     # through record_count (the batch id sits at offsets 16..40)


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
        self._any_job = bool(getattr(registry.load("transport", self.to_name), "any_job", False))
        self.counts = {"batches": 0, "bytes": 0, "reads": 0, "no_frame": 0, "redelivered": 0,
                       "dest_errors": 0, "source_errors": 0}

    # -- destination --------------------------------------------------------
    def _transport(self, job):
        """The destination transport for a (job, node)."""
        from flowcept.transport import open_transport
        k = None if self._any_job else (job.job_name, job.job_id, job.node)
        tr = self._dest.get(k)
        if tr is not None:
            self._dest.move_to_end(k)
            return tr
        tr = open_transport(self.to_name, self.dst_config, job)
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
        """Publishes, flushes, checks that the destination confirmed every
        batch, acknowledges; False if the destination failed."""
        used = {}       # id(transport) -> [transport, delivered before, published]
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
                job = JobInfo(job_name=_text(e.job) or f"{job_id:016x}", job_id=job_id,
                              node=_text(e.node), run_dir="")
                tr = self._transport(job)
                if id(tr) not in used:
                    used[id(tr)] = [tr, tr.delivered, 0]
                if self._any_job:
                    tr.publish(key, frame, job=job)
                else:
                    tr.publish(key, frame)
                used[id(tr)][2] += 1
                self.counts["bytes"] += len(frame)
            for tr, before, sent in used.values():
                tr.flush()
                # the source deletes what is acknowledged: only what the
                # destination counted as confirmed
                if before is None or tr.delivered is None:
                    raise TransportUnavailable(f"{tr.destination()} does not count confirmed "
                                               "batches, so nothing is acknowledged at the source")
                if tr.delivered - before < sent:
                    raise TransportUnavailable(f"{tr.destination()} confirmed "
                                               f"{tr.delivered - before} of {sent} batches")
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
