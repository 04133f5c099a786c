"""The Adapter interface: observe an external system, emit records through
the process's capture session (same node leader, same store and archive as
every decorated task: there is no side channel).

Lifecycle (what every adapter does, in this order):

1. ``__init__(session=None, checkpoint=None, poll_interval=..., **options)``:
   no I/O; options are checked and a bad one raises ``ConfigError`` with a
   one-line fix.
2. ``start()``: loads the checkpoint (the position reached by the previous
   run), settles an emission a crash interrupted (below), opens the source
   (read-only where the source allows it) and the adapter's ring, and, for
   ``start(background=True)``, starts a daemon thread that calls ``poll()``
   every ``poll_interval`` seconds.  Subscribing adapters (files with
   inotify, RabbitMQ) open their subscription here.
3. ``poll()``: one pass.  ``read_new()`` yields what is new since
   ``self.position`` as ``Item``s, each with the position update that
   consumes it (``Item.advance``); this class pushes each item's record into
   the ring and applies its update only then.  An adapter never moves
   ``self.position`` itself for an item it yields, so nothing is consumed
   before its record is in the ring.  A pass never raises for a source
   hiccup: the error is counted in ``errors`` and logged once, and the next
   pass retries from the same position.
4. The checkpoint (the dict ``self.position``) is written after every group
   of records with ``flowcept.osutil.atomic_write``; a restarted adapter
   reads it in ``start()`` and resumes after the last emitted item.
5. ``stop()``: stops the thread, runs a last ``poll()`` (nothing written by
   the source before ``stop()`` is missed), saves the checkpoint and closes
   the source and the ring.  Idempotent.

Exactly once, a crash included (SIGKILL at any instruction): an adapter's
records go into a ring of its own in the session's ring directory, drained
by the session's leader like every ring, and the adapter is its only
producer, so the ring's head before a push says where its records are
reserved.  Before pushing a group of records it writes an intent file
beside the checkpoint (the checkpoint's sequence number, the ring, its
head, and each record's task id and position update); after the pushes it
applies the updates, writes the checkpoint and removes the intent.  A
restarted adapter that finds an intent newer than its checkpoint walks the
ring from the noted head (``Ring.slot_task`` reads each slot's commit
stamp) and applies the updates of exactly the records that were committed:
what was pushed is not pushed again; what was not is read again from the
source.  The ring is read by its own name while it is there (its records
not yet drained wait for the job's recovery: the orphaned leader,
``flowcept recover``, the SLURM epilog); once a leader drained and removed
it, by a hard link that the adapter keeps to it while it runs, under
``<shm_dir>/flowcept-<uid>/adapter-pins/`` (a consumer's release does not
erase a slot, and the dead producer writes no later lap).  The link goes at
a clean stop and at the next start.  Where no proof is left (``/dev/shm``
was wiped by a reboot; a process that does not lead its node, e.g. an MPI
rank other than the node's leader, whose adapter records go into its
session's ring), the intent's items are emitted again with the same record
ids (derived from the source's own ids, ``source_task_id``) and counted in
``reemitted``.  Under SLURM, the epilog refuses a ring with two links: a
job killed while an adapter ran leaves that adapter's ring to
``flowcept recover <job>``.

Sources that keep the position themselves (RabbitMQ: the broker's
acknowledgements) set ``acknowledges_at_source``: each item's
``on_emitted`` (the acknowledgement) runs after its record is in the ring
and the checkpoint notes its id, so a message redelivered after a crash
is acknowledged without a second record.

A new adapter is one file with a subclass that overrides ``open``,
``read_new`` (yield ``Item``s) and ``close``, plus one line in
pyproject.toml under ``[project.entry-points."flowcept.adapters"]``.
``NullAdapter`` below is the template.
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

from flowcept.errors import ConfigError
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, NODE_PREFIX, STATUS_FINISHED
from flowcept.record.payload import ACTIVITY_OVERFLOW as _OVERFLOW
from flowcept.record.payload import encode, placeholder

log = logging.getLogger("flowcept.adapters")

# Record ids of adapters live in origins 0xF00000..0xFFFFFF of the task id
# space (top 24 bits: origin; bit 39: made in C; low 39 bits: sequence).
# Ranks use origins below that, so a derived id never meets a session's own.
_ADAPTER_ORIGIN_BITS = 0xF << 60
_LOW_60 = (1 << 60) - 1
_C_BIT = 1 << 39

ADAPTER_RING_BYTES = 1 << 20    # an adapter's own ring (or ring_bytes, if smaller)
GROUP_ITEMS = 1000              # records per intent (one intent + one checkpoint write each)
PASS_ITEMS = 20000              # items taken from read_new() per pass; the rest next pass
BLOCK_TIMEOUT_MS = 2000         # a full adapter ring waits this long for its leader
_UNACKED_KEEP = 100_000         # ids noted for redelivery that may never come back


def source_task_id(adapter: str, source_id: Any) -> int:
    """A task id derived from an adapter name and the source's own id:
    the same pair gives the same id in every run (59 bits of a blake2b hash).
    Any text is accepted (a file name that is not UTF-8 included)."""
    text = f"{adapter}\0{source_id}".encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(text, digest_size=8).digest()
    v = int.from_bytes(h, "little") & _LOW_60 & ~_C_BIT
    return _ADAPTER_ORIGIN_BITS | v or _ADAPTER_ORIGIN_BITS | 1


def text_of(value: Any) -> str:
    """Valid UTF-8 text for a value that may hold undecodable bytes (a file
    name decoded with surrogateescape): each such byte as ``\\xNN``."""
    s = value if isinstance(value, str) else str(value)
    try:
        s.encode()
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape" if _escaped_only(s) else "surrogatepass") \
                .decode("utf-8", "backslashreplace")


def _escaped_only(s: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in s)


# -- position updates: plain data, so an intent file can hold them ----------
# ["set", [key, ...], value] | ["del", [key, ...]] | ["add", [key, ...], value]
# (path of nested dict keys; "add" appends to a list, created when missing)

def apply_updates(position: Dict[str, Any], updates: List[list]) -> None:
    for op in updates:
        kind, path = op[0], op[1]
        d = position
        for k in path[:-1]:
            d = d.setdefault(k, {})
        last = path[-1]
        if kind == "set":
            d[last] = op[2]
        elif kind == "del":
            d.pop(last, None)
        elif kind == "add":
            d.setdefault(last, []).append(op[2])
        else:
            raise ValueError(f"unknown position update {kind!r}")


@dataclass
class Item:
    """One observed source item, ready to be emitted as a task record."""
    source_id: Any                  # the source's own id (run id, rowid, message id, path+mtime)
    activity: str
    start_ns: int
    end_ns: int
    status: int = STATUS_FINISHED
    used: Optional[dict] = None
    generated: Optional[dict] = None
    tags: Any = None
    custom_metadata: Dict[str, Any] = field(default_factory=dict)
    parent_source_id: Any = None    # another item's source id (parent link), if any
    parent_task_id: int = 0         # or an explicit task id (e.g. a captured task)
    fields: Dict[str, Any] = field(default_factory=dict)  # other document fields (Flowcept's task_id, ...)
    advance: List[list] = field(default_factory=list)   # position updates, applied once emitted
    on_emitted: Optional[Callable[[], None]] = None      # the source's acknowledgement, if any


class _AdapterRing:
    """The ring an adapter alone produces into (see the module docstring),
    adopted by its session's leader, pinned by a hard link."""

    _counter = itertools.count()

    def __init__(self, session, name: str, pin: str):
        from flowcept.native import lib
        from flowcept.native.ring import Ring
        self._push = lib.fc_ring_push_task
        config = session.config
        cfg = config.replace(full_policy="block", block_timeout_ms=BLOCK_TIMEOUT_MS,
                             ring_bytes=min(config.ring_bytes, ADAPTER_RING_BYTES))
        while True:
            path = os.path.join(session.ring_dir, f"{session.rank:06d}.{os.getpid()}."
                                f"{name}-{next(self._counter)}.ring")
            if not os.path.exists(path):
                break
        self.session = session
        self.ring = Ring.create(path, cfg, session.job.job_id, session.workflow_id, session.rank)
        self.path = path
        st = self.ring.stats()
        self.capacity, self.uid = st["capacity"], st["ring_uid"]
        self.names: Dict[str, int] = {}
        self.ring.intern(NODE_PREFIX + session.job.node)   # string 0 of every ring: the node
        self.pin = pin
        try:
            session.drainer.adopt(path)
        except BaseException:
            self.ring.close()
            os.unlink(path)
            raise
        tmp = f"{pin}.tmp{os.getpid()}"
        try:
            os.link(path, tmp)
            os.replace(tmp, pin)
        except OSError as e:   # e.g. a shm_dir that refuses links: no proof after a crash
            log.warning("flowcept %s adapter: cannot pin its ring (%s); after a crash its last "
                        "records may be emitted again", name, e)
            self.pin = None

    def head(self) -> int:
        return self.ring.stats()["head"]

    def push(self, tid: int, parent: int, start: int, end: int, activity: str, status: int,
             payload: bytes, workflow_id: int) -> int:
        flags = FLAG_PAYLOAD_MSGPACK
        aid = self.names.get(activity)
        if aid is None:
            aid = self.ring.intern(activity)
            aid = self.names[activity] = _OVERFLOW if aid < 0 else aid
        if aid == _OVERFLOW:
            from flowcept.native.ring import name_prefix
            from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD
            payload = name_prefix(activity) + payload
            flags |= FLAG_NAME_IN_PAYLOAD
        return self._push(self.ring.handle, tid, parent, workflow_id, start, end, self.session.rank,
                          self.session.thread_index(), aid, status, flags, payload, len(payload))

    def close(self) -> None:
        self.ring.close()   # marks it closed: the leader drains it and removes it at its end
        if self.pin:
            _unlink(self.pin)


class Adapter:
    """Base of every adapter; see the module docstring for the lifecycle."""

    name = "adapter"               # the entry-point name
    default_poll_interval = 1.0
    acknowledges_at_source = False  # the source keeps the position (items carry on_emitted)
    details = True                  # custom_metadata names the adapter and the source's id

    def __init__(self, session=None, *, checkpoint: Optional[str] = None,
                 poll_interval: Optional[float] = None, **options: Any):
        if options:
            raise ConfigError(f"{self.name} adapter: unknown option(s) {', '.join(sorted(options))}; "
                              f"see `flowcept observe {self.name} --help`")
        self.session = session
        self.checkpoint_path = checkpoint
        self.poll_interval = self.default_poll_interval if poll_interval is None else float(poll_interval)
        if self.poll_interval <= 0:
            raise ConfigError(f"{self.name} adapter: poll_interval must be > 0 (got {poll_interval})")
        self.position: Dict[str, Any] = {}
        self.emitted = 0               # records pushed by this object
        self.settled = 0               # records of a crashed run found in its ring (not pushed again)
        self.reemitted = 0             # records of a crashed run that may be stored twice
        self.errors = 0
        self.last_error: Optional[str] = None
        self._seq = 0                  # checkpoint sequence number
        self._ring: Optional[_AdapterRing] = None
        self._lock = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._started = False

    @classmethod
    def from_session(cls, session, **options: Any) -> "Adapter":
        """An adapter whose options come from the session's configuration
        (``<name>_<option>`` keys declared in the adapter module's
        ``OPTIONS``, e.g. ``mlflow_tracking_uri``), overridden by
        ``options``.  ``Flowcept(interceptors=[...])`` builds adapters so."""
        import sys
        module = sys.modules.get(cls.__module__)
        config = getattr(session, "config", None)
        kw: Dict[str, Any] = {}
        for opt in getattr(module, "OPTIONS", ()) if config is not None else ():
            value = getattr(config, f"{cls.name}_{opt.name}", opt.default)
            if value not in (None, "") and value != opt.default:
                kw[opt.name] = value
        kw.update(options)
        return cls(session, **kw)

    # -- what a subclass provides ---------------------------------------
    def source_key(self) -> str:
        """Names the observed source (names the default checkpoint file)."""
        return self.name

    def open(self) -> None:
        """Opens the source (read-only where possible)."""

    def read_new(self) -> Iterator[Item]:
        """Yields what is new since ``self.position``, each item with the
        position update that consumes it; never changes ``self.position``."""
        return iter(())

    def pass_done(self) -> None:
        """Called after a pass whose every item was emitted (e.g. to forget
        change notifications that pass consumed)."""

    def close(self) -> None:
        """Closes the source."""

    # -- lifecycle --------------------------------------------------------
    def start(self, background: bool = False) -> "Adapter":
        if self._started:
            return self
        if self.session is None:
            from flowcept.capture.session import ensure_session
            self.session = ensure_session()
            if self.session is None:
                raise ConfigError(f"{self.name} adapter: capture is disabled or misconfigured "
                                  "(see the flowcept log); set FLOWCEPT_ENABLED=1 or fix the setting")
        if self.checkpoint_path is None:
            digest = hashlib.blake2b(self.source_key().encode("utf-8", "surrogatepass"),
                                     digest_size=6).hexdigest()
            base = os.path.join(self.session.config.run_dir, "adapters")
            self.checkpoint_path = os.path.join(base, f"{self.name}-{digest}.json")
        from flowcept.osutil import private_dir
        private_dir(os.path.dirname(os.path.abspath(self.checkpoint_path)))
        self.position = self.load_checkpoint()
        pin = self._pin_path()
        self._settle_intent()
        _unlink(pin)   # a crashed run's ring: what it holds undrained is recovered with its job
        self.open()
        if getattr(self.session, "drainer", None) is not None:
            self._ring = _AdapterRing(self.session, self.name, pin)
        self._started = True
        if background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"flowcept-{self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def poll(self) -> int:
        """One pass; returns the number of records emitted."""
        with self._lock:
            n = 0
            try:
                gen = self.read_new()
                try:
                    items = list(itertools.islice(gen, PASS_ITEMS))
                finally:
                    close = getattr(gen, "close", None)
                    if close is not None:
                        close()
                for i in range(0, len(items), GROUP_ITEMS):
                    n += self._emit_group(items[i:i + GROUP_ITEMS])
                if len(items) < PASS_ITEMS:
                    self.pass_done()
            except Exception as e:   # a source hiccup: counted, retried on the next pass
                self.errors += 1
                msg = f"{type(e).__name__}: {e}"
                if msg != self.last_error:
                    log.warning("flowcept %s adapter: %s (retrying)", self.name, msg)
                self.last_error = msg
            return n

    def run(self, stop: Optional[threading.Event] = None) -> None:
        """Polls until ``stop`` is set (the service mode of ``flowcept observe``)."""
        stop = stop or self._stop
        while not stop.is_set():
            self.poll()
            stop.wait(self.poll_interval)

    def _loop(self) -> None:
        self.run(self._stop)

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(10.0, 3 * self.poll_interval))
            self._thread = None
        self.poll()
        self.save_checkpoint()
        try:
            self.close()
        finally:
            self._started = False
            if self._ring is not None:
                self._ring.close()
                self._ring = None

    def __enter__(self) -> "Adapter":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    # -- checkpoint -------------------------------------------------------
    @property
    def intent_path(self) -> str:
        return self.checkpoint_path + ".intent"

    def _pin_path(self) -> str:
        from flowcept.osutil import private_dir
        d = private_dir(os.path.join(self.session.config.shm_dir, f"flowcept-{os.geteuid()}",
                                     "adapter-pins"))
        digest = hashlib.blake2b(os.path.abspath(self.checkpoint_path).encode("utf-8", "surrogatepass"),
                                 digest_size=8).hexdigest()
        return os.path.join(d, f"{self.name}-{digest}.ring")

    def _read_json(self, path: str) -> Optional[dict]:
        try:
            with open(path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ConfigError(f"{self.name} adapter: {path} is not valid JSON ({e}); remove it "
                              "to start from the beginning") from None

    def load_checkpoint(self) -> Dict[str, Any]:
        data = self._read_json(self.checkpoint_path)
        if data is None:
            return {}
        if data.get("source") not in (None, self.source_key()):
            raise ConfigError(f"{self.name} adapter: checkpoint {self.checkpoint_path} belongs to "
                              f"{data.get('source')!r}, not {self.source_key()!r}; pass another "
                              "--checkpoint")
        self._seq = int(data.get("seq", 0))
        return dict(data.get("position") or {})

    def save_checkpoint(self) -> None:
        from flowcept.osutil import atomic_write
        if self.checkpoint_path is None:
            return
        with self._lock:
            doc = {"source": self.source_key(), "adapter": self.name, "saved_at": time.time(),
                   "emitted": self.emitted, "seq": self._seq, "position": self.position}
            atomic_write(self.checkpoint_path, json.dumps(doc, sort_keys=True, default=str))

    def _settle_intent(self) -> None:
        """After a crash: applies the position updates of the intent's
        records that its pinned ring proves committed (module docstring)."""
        intent = self._read_json(self.intent_path)
        if intent is None:
            return
        if int(intent.get("seq", 0)) <= self._seq:   # its checkpoint was written: nothing to do
            _unlink(self.intent_path)
            return
        items = intent.get("items") or []
        committed = self._committed(intent, [it[0] for it in items])
        if committed is None:
            self.reemitted += len(items)
            log.warning("flowcept %s adapter: %d record(s) of a crashed run cannot be proven "
                        "stored (its ring is gone); they are emitted again with the same ids",
                        self.name, len(items))
            committed = 0
        for tid, updates in items[:committed]:
            apply_updates(self.position, updates)
        self.settled += committed
        self._seq = int(intent["seq"])
        self.save_checkpoint()
        _unlink(self.intent_path)

    def _committed(self, intent: dict, ids: List[int]) -> Optional[int]:
        """How many of ids, in order from the intent's head, are committed
        records of its ring (by its own name, or by its pin once its leader
        removed it); None when the ring cannot tell."""
        from flowcept.native.ring import Ring, RingError
        ring = None
        for path in (intent.get("ring"), intent.get("pin")):
            if not path:
                continue
            try:
                ring = Ring.open(path)
            except (RingError, OSError):
                continue
            if ring.stats()["ring_uid"] == intent.get("uid"):
                break
            ring.close()
            ring = None
        if ring is None:
            return None
        try:
            pos, n = int(intent.get("head", 0)), 0
            for tid in ids:
                got = ring.slot_task(pos)
                if got is None or got[0] != tid:
                    break
                pos = got[1]
                n += 1
            return n
        finally:
            ring.close()

    # -- emission ---------------------------------------------------------
    def task_id_for(self, source_id: Any) -> int:
        return source_task_id(self.name, source_id)

    def _payload(self, item: Item) -> bytes:
        body: Dict[str, Any] = dict(item.fields)
        if item.used is not None:
            body["used"] = item.used
        if item.generated is not None:
            body["generated"] = item.generated
        if item.tags is not None:
            body["tags"] = item.tags
        if self.details or item.custom_metadata:
            meta = {"adapter": self.name, "source_id": text_of(item.source_id)} if self.details else {}
            meta.update(item.custom_metadata)
            body["custom_metadata"] = meta
        data = encode(body)
        ring = self._ring
        if ring is not None and len(data) + 1200 > ring.capacity // 4:   # could never fit
            data = placeholder("payload larger than the adapter ring allows")
        return data

    def _emit_group(self, items: List[Item]) -> int:
        """Emits items: in groups whose records fit half the adapter ring
        (so none of a group is overwritten before a restart could look at
        it), each with its intent, pushes, position updates and checkpoint
        (module docstring)."""
        todo = []   # (item, tid, parent, payload, updates)
        skipped = []
        unacked = set(self.position.get("emitted_unacked") or ())
        for item in items:
            tid = self.task_id_for(item.source_id)
            if self.acknowledges_at_source and tid in unacked:
                skipped.append((item, tid))   # its record is stored: acknowledge it only
                continue
            parent = item.parent_task_id or (self.task_id_for(item.parent_source_id)
                                             if item.parent_source_id is not None else 0)
            updates = list(item.advance)
            if self.acknowledges_at_source:
                updates.append(["add", ["emitted_unacked"], tid])
            todo.append((item, tid, parent, self._payload(item), updates))
        budget = self._ring.capacity // 2 if self._ring is not None else 1 << 62
        pushed, start, size = 0, 0, 0
        try:
            for i, t in enumerate(todo):
                need = 96 + len(t[3])   # slot header, record, payload, alignment
                if size + need > budget and i > start:
                    pushed += self._push_group(todo[start:i])
                    start, size = i, 0
                size += need
            if start < len(todo):
                pushed += self._push_group(todo[start:])
        finally:
            if self.acknowledges_at_source:
                self._acknowledge([(t[0], t[1]) for t in todo[:pushed]] + skipped)
        return pushed

    def _push_group(self, todo: List[tuple]) -> int:
        from flowcept.osutil import atomic_write
        s, ring = self.session, self._ring
        self._seq += 1
        atomic_write(self.intent_path, json.dumps({
            "seq": self._seq, "ring": ring.path if ring is not None else None,
            "uid": ring.uid if ring is not None else None,
            "pin": ring.pin if ring is not None else None,
            "head": ring.head() if ring is not None else 0,
            "items": [[tid, updates] for _, tid, _, _, updates in todo]}, default=str))
        wf = s.workflow_id
        pushed, failure = 0, None
        for item, tid, parent, data, updates in todo:
            if ring is not None:
                rc = ring.push(tid, parent, int(item.start_ns), int(item.end_ns), item.activity,
                               item.status, data, wf)
            else:
                rc = s.push(tid, parent, int(item.start_ns), int(item.end_ns), item.activity,
                            item.status, data, FLAG_PAYLOAD_MSGPACK)
            if rc < 0:   # the ring stayed full (its leader is stuck): the rest next pass
                failure = OSError(-rc, f"adapter ring full ({errno.errorcode.get(-rc, rc)}); "
                                  "its leader is not draining")
                break
            apply_updates(self.position, updates)
            pushed += 1
        self.emitted += pushed
        self.save_checkpoint()
        _unlink(self.intent_path)
        if failure is not None:
            raise failure
        return pushed

    def _acknowledge(self, done: List[tuple]) -> None:
        """Runs each item's on_emitted; an acknowledged id is forgotten (a
        failed one is redelivered and then acknowledged without a record)."""
        unacked = self.position.setdefault("emitted_unacked", [])
        acked = set()
        for item, tid in done:
            if item.on_emitted is None:
                continue
            try:
                item.on_emitted()
                acked.add(tid)
            except Exception as e:
                log.warning("flowcept %s adapter: acknowledgement failed (%s); the source "
                            "redelivers it and it is acknowledged then", self.name, e)
                break
        if acked:
            unacked[:] = [t for t in unacked if t not in acked]
        if len(unacked) > _UNACKED_KEEP:
            del unacked[:len(unacked) - _UNACKED_KEEP]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class NullAdapter(Adapter):
    """The template: observes nothing, emits nothing, counts its passes in
    the checkpoint."""

    name = "null"

    def pass_done(self) -> None:
        self.position["passes"] = int(self.position.get("passes", 0)) + 1
