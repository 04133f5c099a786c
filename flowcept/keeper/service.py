"""The keeper: consumes batches from a transport's source and writes them to
one or more stores (e.g. LMDB shards for the archive and MongoDB for
interactive queries).

Per read (up to ``count`` entries):
  1. every entry is checked: a frame field, size <= keeper_max_frame_bytes,
     ``flowcept.native.batch.validate`` (magic, version, length, offsets, checksum),
     routing key == the key in the frame header, then its contents
     (``flowcept.record.payload.check_records``: workflow payloads are msgpack
     maps, payloads flagged msgpack decode, nesting bounded, name prefixes
     well-formed);
  2. accepted frames go to every store, each in one staged transaction
     (idempotent by batch key: a redelivered batch is skipped); a store that
     refuses a transaction on contents (anything but a store/OS error) is
     given halves of it until the refused entry stands alone, and that entry
     is rejected;
  3. rejected ones go to the quarantine (committed);
  4. only then, when every store committed, are the entries acknowledged.
A crash anywhere before 4 leaves the entries pending: they are delivered
again (to this keeper after a restart under the same name, or to another
one through XAUTOCLAIM) and the store skips what it already has.

Bad input never stops it: every failure of one entry is a rejection with a
reason.  Failures of the store (``StoreError``, ``OSError``, LMDB errors:
disk or map full) or of the transport (down) are retried with a back-off and
logged with their type and message, and nothing is acknowledged meanwhile.
An entry a store refused after another store committed it stays in that
other store (and is quarantined as well).

SIGTERM/SIGINT: stops reading, commits and acknowledges what it holds,
writes its status file and returns 0.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Dict, List, Optional

from flowcept.errors import StoreError, TransportUnavailable
from flowcept.keeper.loop import SourceLoop
from flowcept.native.batch import BatchError, validate
from flowcept.record.payload import PayloadError, check_records

log = logging.getLogger("flowcept.keeper")

# What a store may raise that is about the store, not the batch: retried.
try:
    import lmdb as _lmdb
    STORE_ERRORS: tuple = (StoreError, OSError, _lmdb.Error)
except ImportError:   # pragma: no cover - lmdb is a dependency
    STORE_ERRORS = (StoreError, OSError)
STATUS_PREFIX = "keeper-"
STATUS_SUFFIX = ".status.json"


def default_name() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class Keeper(SourceLoop):
    """``Keeper(config, ...).run()`` until ``stop()`` (or SIGTERM/SIGINT);
    ``run(max_idle_s)`` also returns once idle that long (tools and tests)."""

    def __init__(self, config, store_dir: Optional[str] = None, name: Optional[str] = None,
                 url: Optional[str] = None, transport: Optional[str] = None, count: int = 16,
                 block_ms: int = 200, status_interval: float = 1.0,
                 stores: Optional[List[tuple]] = None):
        """``stores``: ``[(backend, location), ...]`` to write to (default: the
        configured store at ``store_dir``).  The first store's directory (or
        ``store_dir``) holds the quarantine and the status files."""
        super().__init__()
        overrides = {}
        if url:
            overrides["transport_url"] = url
        if transport:
            overrides["transport"] = transport
        if overrides:
            config = config.replace(**overrides)
        self.config = config
        self.store_dir = os.path.abspath(store_dir or config.store_dir
                                         or os.path.join(config.run_dir, "store"))
        self.store_specs = list(stores) if stores else [(config.store, self.store_dir)]
        self.name = name or default_name()
        self.count = max(1, count)
        self.block_ms = block_ms
        self.status_interval = status_interval
        self.max_frame = config.keeper_max_frame_bytes
        self.counts = {"batches_in": 0, "records_in": 0, "duplicates": 0, "rejected": 0,
                       "acked": 0, "reads": 0, "store_errors": 0, "transport_errors": 0}
        self.rejected: Dict[str, int] = {}
        self.started = time.time()
        self.stores = []
        self.quarantine = None
        self._last_status = 0.0
        self._source_info: List[dict] = []

    # -- the loop's parts -----------------------------------------------------
    def open(self) -> None:
        from flowcept.store.quarantine import Quarantine
        from flowcept.osutil import private_dir
        from flowcept.store import open_store
        from flowcept.transport import open_sources
        private_dir(self.store_dir)
        for backend, location in self.store_specs:
            self.stores.append(open_store(backend, location, self.config))
        self.quarantine = Quarantine(self.store_dir)
        self.sources = open_sources(self.config.transport, self.config, self.name)
        self.write_status()

    def read_failed(self, err, retry_in: float) -> None:
        self.counts["transport_errors"] += 1
        log.warning("keeper %s: %s; retrying in %.1fs", self.name, err, retry_in)

    def handle(self, src, entries) -> bool:
        self.process(src, entries)
        return True     # a store failure waits in process(), it does not back off

    def after_round(self) -> None:
        if time.monotonic() - self._last_status >= self.status_interval:
            self.write_status()

    # -- one read -------------------------------------------------------------
    def check(self, entry):
        """(key, frame) of a good entry, or raises _Reject."""
        frame = entry.frame
        if frame is None:
            raise _Reject("no_frame", "entry has no frame field 'f'")
        if len(frame) > self.max_frame:
            raise _Reject("oversized", f"{len(frame)} bytes > keeper_max_frame_bytes={self.max_frame}")
        try:
            validate(frame)
        except BatchError as e:
            raise _Reject(e.name, str(e)) from None
        from flowcept.native.batch import batch_key
        import struct
        # header fields job_id, ring_uid, seq at offsets 16, 24, 32 (validated above)
        job_id, ring_uid, seq = struct.unpack_from("<QQQ", frame, 16)
        key = batch_key(job_id, ring_uid, seq)
        if entry.key is not None and bytes(entry.key) != key:
            raise _Reject("key_mismatch", f"routing key {bytes(entry.key).hex()} != frame key {key.hex()}")
        from flowcept.native.batch import Batch
        try:
            b = Batch(frame, check=False)
            check_records(b.records, b.payload)
        except PayloadError as e:
            raise _Reject("bad_payload", str(e)) from None
        return key, frame

    def process(self, src, entries) -> None:
        self.counts["reads"] += 1
        accepted, rejected, entry_of = [], [], {}
        for entry in entries:
            try:
                item = self.check(entry)
                accepted.append(item)
                entry_of[id(item)] = entry
            except _Reject as r:
                rejected.append({"reason": r.reason, "detail": r.detail, "frame": entry.frame,
                                 "routing": _safe_routing(entry)})
            except Exception as e:     # never crash on input
                rejected.append({"reason": "internal", "detail": _describe(e),
                                 "frame": entry.frame if isinstance(entry.frame, bytes) else b"",
                                 "routing": _safe_routing(entry)})
        first = self.stores[0]
        try:
            fresh = {key for key, _ in accepted if not first.has(key)}
            new = 0
            for i, store in enumerate(self.stores):
                n, refused = self._put(store, accepted) if accepted else (0, [])
                if i == 0:
                    new = n
                if refused:
                    bad = {id(item) for item, _ in refused}
                    accepted = [item for item in accepted if id(item) not in bad]
                    for item, err in refused:
                        rejected.append({"reason": "store_refused",
                                         "detail": f"{_store_name(store)}: {_describe(err)}",
                                         "frame": item[1],
                                         "routing": _safe_routing(entry_of[id(item)])})
            self.quarantine.put(rejected)
        except STORE_ERRORS as e:   # store failure: nothing acknowledged, redelivered later
            self.counts["store_errors"] += 1
            log.error("keeper %s: store write failed (%s); %d entries stay pending", self.name,
                      _describe(e), len(entries))
            try:
                src.redeliver(entries)
            except TransportUnavailable as te:
                self.counts["transport_errors"] += 1
                log.warning("keeper %s: %s; the entries stay pending at the source", self.name, te)
            self._stop.wait(1.0)
            return
        seen = set()
        new_records = 0
        for key, frame in accepted:
            if key in fresh and key not in seen:
                new_records += _record_count(frame)
            seen.add(key)
        self.counts["batches_in"] += new
        self.counts["records_in"] += new_records
        self.counts["duplicates"] += max(0, len(accepted) - new)
        self.counts["rejected"] += len(rejected)
        for r in rejected:
            self.rejected[r["reason"]] = self.rejected.get(r["reason"], 0) + 1
            log.warning("keeper %s: quarantined a batch (%s: %s)", self.name, r["reason"], r["detail"])
        try:
            src.ack(entries)
            self.counts["acked"] += len(entries)
        except TransportUnavailable as e:
            self.counts["transport_errors"] += 1
            log.warning("keeper %s: ack failed (%s); the entries will be redelivered and skipped",
                        self.name, e)

    def _put(self, store, items):
        """(new, refused) of writing items to one store: a transaction refused
        on contents is split in halves until each refused entry stands alone
        (``refused``: [((key, frame), error)]); store errors propagate."""
        try:
            return store.put_batches(items), []
        except STORE_ERRORS:
            raise
        except Exception as e:   # about the contents of some entry
            if len(items) == 1:
                return 0, [(items[0], e)]
        half = len(items) // 2
        n1, r1 = self._put(store, items[:half])
        n2, r2 = self._put(store, items[half:])
        return n1 + n2, r1 + r2

    # -- status ---------------------------------------------------------------
    def status(self) -> dict:
        return {"name": self.name, "pid": os.getpid(),
                "host": socket.gethostname(), "transport": self.config.transport,
                "sources": [s.name for s in self.sources], "store_dir": self.store_dir,
                "stores": [f"{b}:{loc}" for b, loc in self.store_specs],
                "started": self.started, "updated": time.time(),
                "running": not self._stop.is_set(),
                **self.counts, "rejected_by_reason": dict(self.rejected)}

    def write_status(self, running: Optional[bool] = None) -> None:
        doc = self.status()
        if running is not None:
            doc["running"] = running
        path = os.path.join(self.store_dir, f"{STATUS_PREFIX}{_safe(self.name)}{STATUS_SUFFIX}")
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("keeper %s: cannot write status %s: %s", self.name, path, e)
        self._last_status = time.monotonic()

    def close(self) -> None:
        if self.stores:
            self.write_status(running=False)
        for src in self.sources:
            src.close()
        if self.quarantine is not None:
            self.quarantine.close()
            self.quarantine = None
        for store in self.stores:
            store.close()
        self.stores = []


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _record_count(frame) -> int:
    import struct
    return struct.unpack_from("<I", frame, 48)[0]   # header record_count


def _describe(e: BaseException) -> str:
    """'Type: message' of an exception, whatever its __str__ does."""
    try:
        text = str(e)
    except Exception:
        text = "<str() failed>"
    return f"{type(e).__name__}: {text}"[:500]


def _store_name(store) -> str:
    return f"{getattr(store, 'name', type(store).__name__)}:{getattr(store, 'location', '?')}"


def _safe_routing(entry) -> dict:
    try:
        return entry.routing()
    except Exception:
        return {}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def read_status(store_dir: str, config=None) -> dict:
    """Aggregated keeper status of a store dir, plus what the configured
    transport's sources say (stream lengths, lag) when ``config`` is given."""
    import glob
    keepers = []
    for path in sorted(glob.glob(os.path.join(store_dir, STATUS_PREFIX + "*" + STATUS_SUFFIX))):
        try:
            with open(path) as f:
                keepers.append(json.load(f))
        except (OSError, ValueError):
            continue
    total = {"batches_in": 0, "records_in": 0, "duplicates": 0, "rejected": 0}
    reasons: Dict[str, int] = {}
    for k in keepers:
        for key in total:
            total[key] += int(k.get(key, 0))
        for r, n in (k.get("rejected_by_reason") or {}).items():
            reasons[r] = reasons.get(r, 0) + int(n)
    out = {"store_dir": store_dir, "keepers": keepers, "totals": total,
           "rejected_by_reason": reasons}
    if os.path.isfile(os.path.join(store_dir, "store.json")):
        from flowcept.store import open_store_at
        with open_store_at(store_dir) as st:
            out["shards"] = st.stats().get("shards", [])
    from flowcept.store.quarantine import Quarantine
    q = Quarantine(store_dir, readonly=True)
    out["quarantined"] = len(q)
    q.close()
    if config is not None:
        from flowcept.transport import open_sources
        sources = []
        try:
            for src in open_sources(config.transport, config, "status"):
                try:
                    sources.append({"name": src.name, **src.info()})
                finally:
                    src.close()
        except (TransportUnavailable, LookupError) as e:
            sources.append({"name": config.transport, "error": str(e)})
        out["sources"] = sources
    return out


def format_status(st: dict) -> str:
    lines = [f"store {st['store_dir']}"]
    t = st["totals"]
    lines.append(f"  batches in {t['batches_in']}, records in {t['records_in']}, duplicates skipped "
                 f"{t['duplicates']}, rejected {t['rejected']} (quarantined: {st.get('quarantined', 0)})")
    for r, n in sorted(st["rejected_by_reason"].items()):
        lines.append(f"    rejected {r}: {n}")
    for s in st.get("shards", []):
        lines.append(f"  shard {s['shard']:03d}: {s['batches']} batches, {s['bytes'] / 1e6:.1f} MB")
    for k in st["keepers"]:
        age = time.time() - k.get("updated", 0)
        state = "running" if k.get("running") and age < 30 else "stopped"
        lines.append(f"  keeper {k['name']} ({state}, pid {k.get('pid')}, updated {age:.0f}s ago): "
                     f"{k.get('batches_in', 0)} batches, {k.get('records_in', 0)} records, "
                     f"{k.get('rejected', 0)} rejected")
    for s in st.get("sources", []):
        if "error" in s:
            lines.append(f"  source {s['name']}: {s['error']}")
            continue
        lines.append(f"  source {s['name']}: " + ", ".join(
            f"{k} {v}" for k, v in s.items() if k not in ("name", "groups") and not
            isinstance(v, (list, dict))))
        for g in s.get("groups", []):
            lag = f", lag {g['lag']}" if "lag" in g else ""
            lines.append(f"    group {g['name']}: pending {g['pending']}{lag}, "
                         f"{g['consumers']} consumer(s)")
    return "\n".join(lines)
