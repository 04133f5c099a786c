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
one through XAUTOCLAIM or a Kafka rebalance) and the store skips what it
already has.

Peers: a keeper that replaces another one with another directory (or runs
beside others, ``flowcept keeper run --workers N``) is given the other
directories as ``peers`` (read-only): a batch already committed in a peer
is acknowledged without being written to this keeper's directory stores
again (URL stores, shared by all keepers, still get it: they skip what
they hold).  So a batch committed by a keeper killed before its
acknowledgement is not stored in two directories.  What peers cannot cover
(a replacement that cannot see the old directory, or two keepers handed
the same batch at the same moment) readers drop by batch id.

Counters (``COUNTERS``, in ``counts``, the status file and
``read_status``): see the table below; the metrics exporter reads them.

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
import sys
import time
from typing import Dict, List, Optional, Sequence

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

# (name, what it counts): every keeper counter, in ``Keeper.counts``, in
# each keeper's status file and summed in ``read_status()["totals"]``.
COUNTERS = (
    ("batches_in", "new batches stored"),
    ("records_in", "new records stored"),
    ("duplicates", "batches skipped: already in this keeper's store (redeliveries)"),
    ("peer_duplicates", "batches skipped: already committed in a peer keeper's directory"),
    ("rejected", "batches quarantined"),
    ("acked", "entries acknowledged at the source"),
    ("reads", "non-empty reads from the sources"),
    ("store_errors", "failed store commits (the entries were delivered again)"),
    ("transport_errors", "failed reads or acknowledgements"),
)
# gauges in the status file: records_per_s (over the last status interval),
# lag (entries the keepers' group has not read yet, summed over the
# sources; null until measured: on a terminal, or with lag_interval set)
PROGRESS_INTERVAL_S = 5.0


def default_name() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class Keeper(SourceLoop):
    """``Keeper(config, ...).run()`` until ``stop()`` (or SIGTERM/SIGINT);
    ``run(max_idle_s)`` also returns once idle that long (tools and tests)."""

    def __init__(self, config, store_dir: Optional[str] = None, name: Optional[str] = None,
                 url: Optional[str] = None, transport: Optional[str] = None, count: int = 16,
                 block_ms: int = 200, status_interval: float = 1.0,
                 stores: Optional[List[tuple]] = None, peers: Sequence[str] = (),
                 progress: Optional[bool] = False, lag_interval: Optional[float] = None,
                 progress_interval: float = PROGRESS_INTERVAL_S):
        """``stores``: ``[(backend, location), ...]`` to write to (default: the
        configured store at ``store_dir``).  The first store's directory (or
        ``store_dir``) holds the quarantine and the status files.
        ``peers``: other keepers' store directories (or directories holding
        them), read only (see the module docstring).  ``progress``: a
        one-line progress on stderr every few seconds (None: when stderr is
        a terminal).  ``lag_interval``: ask the sources for the group's lag
        this often (default: with the progress line only)."""
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
        self.counts = {name: 0 for name, _ in COUNTERS}
        self.rejected: Dict[str, int] = {}
        self.started = time.time()
        self.stores = []
        self.quarantine = None
        self._last_status = 0.0
        self.peer_paths = [os.path.abspath(p) for p in peers]
        self._peers: Dict[str, object] = {}      # store dir -> read-only store
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.progress_interval = progress_interval
        self.lag_interval = lag_interval if lag_interval is not None else (
            progress_interval if self.progress else None)
        self.lag: Optional[int] = None
        self.records_per_s = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._last_lag = 0.0
        self._last_progress = time.monotonic()
        self._progress_shown = False

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
        self._open_peers()
        self.sources = open_sources(self.config.transport, self.config, self.name)
        self.write_status()

    def read_failed(self, err, retry_in: float) -> None:
        self.counts["transport_errors"] += 1
        log.warning("keeper %s: %s; retrying in %.1fs", self.name, err, retry_in)

    def handle(self, src, entries) -> bool:
        self.process(src, entries)
        return True     # a store failure waits in process(), it does not back off

    def after_round(self) -> None:
        now = time.monotonic()
        if self.lag_interval is not None and now - self._last_lag >= self.lag_interval:
            self._last_lag = now
            self.lag = self.measure_lag()
        if now - self._last_status >= self.status_interval:
            self._open_peers()
            self.write_status()
        if self.progress and now - self._last_progress >= self.progress_interval:
            self._last_progress = now
            self._show_progress()

    # -- peers ----------------------------------------------------------------
    def _open_peers(self) -> None:
        """Opens (read-only) the peer store directories that exist by now."""
        from flowcept.store import open_store_at, store_dirs_at
        own = {os.path.abspath(loc) for b, loc in self.store_specs if isinstance(loc, str)}
        for top in self.peer_paths:
            for path in store_dirs_at(top):
                if path in own or path in self._peers:
                    continue
                try:
                    self._peers[path] = open_store_at(path, self.config)
                except (OSError, ValueError, LookupError) + STORE_ERRORS as e:
                    log.info("keeper %s: peer store %s not readable yet (%s)", self.name, path, e)

    def _in_peer(self, key: bytes) -> bool:
        for path, st in list(self._peers.items()):
            try:
                if st.has(key):
                    return True
            except STORE_ERRORS as e:   # a peer going away must not stop this keeper
                log.warning("keeper %s: peer store %s: %s; not asked any more", self.name, path, e)
                self._peers.pop(path, None)
                st.close()
        return False

    # -- progress and lag -------------------------------------------------------
    def measure_lag(self) -> Optional[int]:
        """Entries of the keepers' group not read yet, over every source."""
        total, known = 0, False
        for src in self.sources:
            try:
                info = src.info()
            except Exception:      # a status probe never stops the keeper
                continue
            for g in info.get("groups") or ():
                if "lag" in g:
                    total += int(g["lag"])
                    known = True
        return total if known else None

    def _update_rate(self) -> None:
        now, rec = time.monotonic(), self.counts["records_in"]
        t0, r0 = self._rate_mark
        if now - t0 >= 0.5:
            self.records_per_s = (rec - r0) / (now - t0)
            self._rate_mark = (now, rec)

    def _show_progress(self) -> None:
        self._update_rate()
        sys.stderr.write("\r" + progress_line(self.name, self.counts, self.records_per_s, self.lag)
                         + "  ")
        sys.stderr.flush()
        self._progress_shown = True

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
            in_peer = {key for key in fresh if self._peers and self._in_peer(key)}
            fresh -= in_peer
            new = 0
            for i, store in enumerate(self.stores):
                items = accepted
                if in_peer and getattr(store, "location_kind", "dir") == "dir":
                    items = [item for item in accepted if item[0] not in in_peer]
                n, refused = self._put(store, items) if items else (0, [])
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
        skipped = len({key for key, _ in accepted if key in in_peer})
        self.counts["peer_duplicates"] += skipped
        self.counts["duplicates"] += max(0, len(accepted) - new - skipped)
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
                "peers": sorted(self._peers),
                "started": self.started, "updated": time.time(),
                "running": not self._stop.is_set(),
                "records_per_s": round(self.records_per_s, 1), "lag": self.lag,
                **self.counts, "rejected_by_reason": dict(self.rejected)}

    def write_status(self, running: Optional[bool] = None) -> None:
        self._update_rate()
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
        if self._progress_shown:
            self._show_progress()
            sys.stderr.write("\n")
            self._progress_shown = False
        if self.stores:
            self.write_status(running=False)
        for st in self._peers.values():
            st.close()
        self._peers = {}
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
    total = {name: 0 for name, _ in COUNTERS}
    total["records_per_s"] = 0.0
    reasons: Dict[str, int] = {}
    for k in keepers:
        for key in total:
            if key == "records_per_s":
                if k.get("running"):
                    total[key] += float(k.get(key) or 0)
            else:
                total[key] += int(k.get(key) or 0)
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


def progress_line(name: str, counts: dict, records_per_s: float, lag: Optional[int]) -> str:
    """The keeper's one-line progress: records, batches, rate, lag."""
    lag_text = "lag ?" if lag is None else f"lag {lag:,} entries"
    extra = ""
    if counts.get("rejected"):
        extra += f", {counts['rejected']:,} rejected"
    if counts.get("store_errors") or counts.get("transport_errors"):
        extra += f", {counts.get('store_errors', 0) + counts.get('transport_errors', 0):,} errors"
    return (f"keeper {name}: {counts.get('records_in', 0):,} records, "
            f"{counts.get('batches_in', 0):,} batches, {records_per_s / 1e3:,.1f} k records/s, "
            f"{lag_text}{extra}")


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
