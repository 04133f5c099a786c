"""Mofka transport (leader side) and event source (keeper side).

Each batch is one event: the frame is the event's *data*; its *metadata* is a
small JSON object with the routing fields (key in hex, job, node, frame
length, format version).

Client generations
------------------
Supported (``SUPPORTED``), detected when a transport or source starts; any
other client is refused there with one line naming this range:

* ``diaspora_stream.api`` -- diaspora-stream-api >= 0.4, which Mofka >= 0.8
  builds on (its ``mochi.mofka.client`` then re-exports the same classes).
  Exercised live against diaspora-stream-api 0.5.2 + Mofka 0.8.2 (na+sm) and
  against diaspora's "simple" test backend.  Source:
  diaspora-project/diaspora-stream-api python/py-diaspora-stream-api.cpp:
  ``Driver(*, backend, options={})``; ``topic.producer(name="", *,
  batch_size, max_num_batches, ordering, thread_pool, options)``;
  ``push(metadata, data, *, partition=None)`` -> FutureUint;
  ``flush()`` -> FutureFlushed (``completed`` a property,
  ``wait(*, timeout_ms)``, no default); ``topic.consumer(name, *, batch_size,
  ...)`` (the overload that loads all data); ``pull()`` -> FutureEvent
  (``completed()`` a method, ``wait(*, timeout_ms)`` -> Event or None on
  timeout); ``event.event_id`` None for "no more events" (its ``data`` must
  not be read then); ``event.partition`` a dict; ``event.acknowledge()``.
  Mofka's driver: mochi-hpc/mofka python/mochi/mofka/client.py
  ``MofkaDriver(**options)`` with ``{"group_file": ..., "margo": {...}}``; the
  driver makes and owns its margo engine (src/MofkaDriver.cpp: one per
  protocol, the protocol read from the group file's addresses).
* ``mochi.mofka.client`` on its own ``pymofka_client`` binding -- Mofka 0.6.x,
  the last generation before diaspora-stream-api (mochi-hpc/mofka
  python/mochi/mofka/client.py ``MofkaDriver(group_file, arg=None,
  use_progress_thread=None)``, python/py-mofka-client.cpp: the same
  keyword-only producer/consumer signatures as above, ``FutureEvent.wait()``
  and ``FutureUint.wait()`` without a timeout, ``completed()`` a method on
  FutureEvent and a property on FutureUint, ``FullDataSelector`` and
  ``ByteArrayAllocator`` exported).  Not buildable here: covered by a test
  double with those signatures only.

Refused: Mofka 0.7.0 (diaspora-stream-api 0.3: ``Driver.new(...)``, waits
without ``timeout_ms``) and Mofka <= 0.5.x (positional producer arguments,
``event.data`` of the consumer without a data selector dereferences a null
pointer in 0.3.0-0.5.3).

Behaviour
---------
* Waiting: futures are polled through ``completed`` (cheap, never blocks)
  and only waited once complete, so ``block_ms`` and the flush timeout hold
  in every generation.  ``flush()`` starts the producer's flush and then
  confirms every push future (set when its batch was stored or failed): in
  Mofka 0.8.2 the flush future's ``completed`` turns true only inside
  ``wait()``, a finite ``timeout_ms`` there misbehaves (a deadline built
  without normalising nanoseconds), and ``0``/``-1`` wait forever.
* Consumers are named by the caller (the keeper passes its name): Mofka keeps
  one cursor per consumer name on the server, so a keeper restarted under the
  same name resumes after what it acknowledged.  A new name starts at 0.
* Acknowledgement is cumulative per partition on the server (the cursor
  becomes ``event_id + 1``).  ``MofkaSource.ack`` therefore acknowledges, per
  partition, only the last event of the contiguous run of acknowledged
  entries from the oldest one it holds: never past an entry that was not
  committed.
* Producers and consumers get a thread pool of one execution stream
  (``driver.make_thread_pool(1)``): with the default (0 threads) the batch
  work runs in the caller's Argobots pool, i.e. only while the caller blocks
  in a ``wait()``, and polled futures would never complete.
* The margo engine belongs to the driver; nothing here creates or finalizes
  one.  ``close`` drops consumer/producer, topic and driver in that order.
  After a failed push or flush the producer may hold a batch in flight to a
  server that is gone; its destructor would then block forever, so it is
  abandoned (kept alive to process exit) and the next ``publish`` reconnects
  from the group file (which a restarted server rewrites), at most once a
  second.
* ``mofka_protocol`` has no effect: the protocol comes from the group file's
  addresses (a different value is logged as a warning).
"""
from __future__ import annotations

import importlib
import json
import logging
import re
import threading
import time
from collections import deque
from typing import Dict, List, Optional, Tuple

from flowcept.transport import Entry, Source, Transport, TransportUnavailable

log = logging.getLogger("flowcept.transport.mofka")

GEN_DIASPORA = "diaspora_stream.api"
GEN_CLIENT = "mochi.mofka.client"

SUPPORTED = ("Mofka 0.8+ with diaspora-stream-api 0.4+ (diaspora_stream.api or "
             "mochi.mofka.client) or Mofka 0.6.x (mochi.mofka.client on pymofka_client)")

# (option, type, default, doc): read as config.mofka_<option>
OPTIONS = (
    ("group_file", str, "",
     "Flock group file written by the Mofka servers (bedrock), e.g. /path/mofka.json"),
    ("topic", str, "flowcept",
     "topic name, letters, digits and _ only, not starting with a digit"),
    ("protocol", str, "",
     "no effect: the Mercury protocol comes from the group file (a different value is logged)"),
    ("driver", str, "mofka",
     "diaspora-stream-api backend: mofka, or e.g. simple:libdiaspora-simple-backend.so"),
    ("create_topic", bool, False,
     "create the topic (one default partition on server 0) when it does not exist"),
    ("timeout_s", float, 30.0,
     "longest wait for a flush to be confirmed before the transport counts as unavailable"),
)
_DEFAULTS = {name: default for name, _t, default, _d in OPTIONS}

TOPIC_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PROTOCOL_RE = re.compile(r"^[a-z0-9_]+(\+[a-z0-9_]+)?(://.*)?$")
KNOWN_PROTOCOLS = ("na+sm", "ofi+tcp", "ofi+verbs", "ofi+cxi", "cxi", "ofi+shm", "tcp",
                   "ucx+all", "ucx+rc", "ucx+tcp", "ofi+gni", "ofi+psm2", "ofi+opx", "bmi+tcp")
_POLL_S = 0.002


def opt(config, name):
    """``config.mofka_<name>``, or the option's default where the config lacks it."""
    return getattr(config, f"mofka_{name}", _DEFAULTS[name])


def _config_error(msg):
    from flowcept.config import ConfigError
    return ConfigError(msg)


def check_protocol(protocol: str) -> str:
    """Validates a Mercury protocol name (``mofka_protocol``, informational)."""
    p = (protocol or "").strip()
    if not p or not _PROTOCOL_RE.match(p):
        raise _config_error(
            f"mofka_protocol={protocol!r}: not a Mercury protocol; use one of "
            f"{', '.join(KNOWN_PROTOCOLS[:5])} (it has no effect: the group file names it)")
    return p


def check_topic(topic: str) -> str:
    if not topic or not TOPIC_RE.match(topic):
        raise _config_error(
            f"mofka_topic={topic!r}: Mofka topic names must match ^[a-zA-Z_][a-zA-Z0-9_]*$ "
            "(letters, digits, _; each partition's provider is named after its topic), "
            "e.g. flowcept or flowcept_job42")
    return topic


def _is_mofka_driver(config) -> bool:
    return (opt(config, "driver") or "mofka").split(":", 1)[0] == "mofka"


def check_config(config) -> None:
    """Configuration checks that need no Mofka installed."""
    if opt(config, "protocol"):
        check_protocol(opt(config, "protocol"))
    if _is_mofka_driver(config) and not opt(config, "group_file"):
        raise _config_error(
            "transport=mofka needs mofka_group_file: the group file written by the Mofka "
            "servers (bedrock), e.g. FLOWCEPT_MOFKA_GROUP_FILE=/path/mofka.json")
    check_topic(opt(config, "topic"))


def group_protocol(group_file: str) -> Optional[str]:
    """The Mercury protocol of a Flock group file's first member, or None."""
    try:
        with open(group_file) as f:
            doc = json.load(f)
        addr = doc["members"][0]["address"]
        return addr.split("://", 1)[0] if "://" in addr else addr.split(":", 1)[0]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def encode_metadata(key: bytes, job: str, node: str, length: int) -> dict:
    """The routing metadata of one batch event (small; the frame is the data)."""
    from flowcept.record.layout import FORMAT_VERSION
    return {"key": bytes(key).hex(), "job": job, "node": node, "len": int(length),
            "v": FORMAT_VERSION}


def decode_metadata(meta) -> dict:
    """Inverse of encode_metadata; accepts a dict, a JSON str or bytes."""
    if isinstance(meta, (bytes, bytearray, memoryview)):
        meta = bytes(meta).decode("utf-8")
    if isinstance(meta, str):
        meta = json.loads(meta) if meta else {}
    if not isinstance(meta, dict):
        raise ValueError(f"event metadata is {type(meta).__name__}, expected a JSON object")
    out = dict(meta)
    if isinstance(out.get("key"), str):
        try:
            out["key"] = bytes.fromhex(out["key"])
        except ValueError:
            out["key"] = None
    return out


# -- generations -----------------------------------------------------------------------
def detect_generation(importer=None) -> Tuple[str, object]:
    """(generation, module) of the installed Mofka client; diaspora first.
    Raises TransportUnavailable naming both when neither imports."""
    importer = importer or importlib.import_module
    errors = []
    for name in (GEN_DIASPORA, GEN_CLIENT):
        try:
            return name, importer(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise TransportUnavailable(
        "the mofka transport needs Mofka's Python client, found neither generation ("
        + "; ".join(errors) + f"); supported: {SUPPORTED}; install Mofka (e.g. "
        "`spack install mofka +python`) and load it into this environment, or use "
        "transport=redis")


def _doc(obj) -> str:
    return getattr(obj, "__doc__", None) or ""


def _init_params(cls):
    import inspect
    try:
        return set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return set()


def client_api(gen: str, mod) -> str:
    """``"diaspora"`` or ``"pymofka"``: which binding API the module speaks; raises
    ConfigError (one line, naming SUPPORTED) for any other."""
    def refuse(what):
        return _config_error(f"unsupported Mofka client: {what}; supported: {SUPPORTED}")

    fe = getattr(mod, "FutureEvent", None)
    if fe is None or not hasattr(fe, "wait") or not hasattr(mod, "Driver" if gen == GEN_DIASPORA
                                                                else "MofkaDriver"):
        raise refuse(f"{gen} has no FutureEvent/driver classes")
    if "timeout_ms" in _doc(fe.wait):
        # diaspora-stream-api >= 0.4 (directly, or under Mofka >= 0.8's mochi.mofka.client)
        driver = getattr(mod, "Driver", None)
        if driver is not None and hasattr(driver, "new"):
            raise refuse(f"{gen} has Driver.new (diaspora-stream-api <= 0.3, Mofka 0.7)")
        return "diaspora"
    if gen == GEN_DIASPORA:
        raise refuse("diaspora_stream.api without FutureEvent.wait(timeout_ms=...) "
                     "(diaspora-stream-api <= 0.3, as shipped with Mofka 0.7.0)")
    # pymofka_client generation: only 0.6.x, which has the full-data consumer and
    # MofkaDriver(group_file, use_progress_thread=...)
    if not hasattr(mod, "FullDataSelector") or "use_progress_thread" not in _init_params(mod.MofkaDriver):
        raise refuse("mochi.mofka.client of Mofka <= 0.5 (no FullDataSelector / "
                     "MofkaDriver(use_progress_thread=))")
    return "pymofka"


def _completed(fut) -> bool:
    """FutureEvent.completed is a method, FutureFlushed/FutureUint.completed a property."""
    c = getattr(fut, "completed", None)
    if c is None:
        return True
    return bool(c() if callable(c) else c)


def _wait_done(fut, api: str):
    """The value of a future that is complete (returns promptly)."""
    if api == "diaspora":
        return fut.wait(timeout_ms=-1)
    return fut.wait()


def _wait(fut, api: str, timeout_s: Optional[float]):
    """(done, value): polls ``completed`` until ``timeout_s`` (None: do not wait)."""
    if _completed(fut):
        return True, _wait_done(fut, api)
    if not timeout_s or timeout_s <= 0:
        return False, None
    deadline = time.monotonic() + timeout_s
    delay = _POLL_S / 4
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, None
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.02)
        if _completed(fut):
            return True, _wait_done(fut, api)


# -- drivers (one per process and target, shared by transports and sources) -------------
_DRIVERS: Dict[tuple, list] = {}
_DRIVERS_LOCK = threading.Lock()


def _make_driver(config, gen, mod, api):
    backend = opt(config, "driver") or "mofka"
    group_file = opt(config, "group_file")
    if api == "pymofka":
        if backend != "mofka":
            raise _config_error(f"mofka_driver={backend!r}: Mofka 0.6.x has only the mofka driver")
        return mod.MofkaDriver(group_file, use_progress_thread=True)
    options = {"group_file": group_file, "margo": {"use_progress_thread": True}}
    if backend == "mofka":
        # Mofka's own class has add_default_partition (to create topics)
        try:
            client = mod if gen == GEN_CLIENT else importlib.import_module(GEN_CLIENT)
            return client.MofkaDriver(**options)
        except ImportError:
            return mod.Driver(backend="mofka:libmofka.so", options=options)
    if backend.split(":", 1)[0] == "mofka":
        return mod.Driver(backend=backend, options=options)
    return mod.Driver(backend=backend, options={})


def _acquire_driver(config, gen, mod, api):
    key = (gen, opt(config, "driver") or "mofka", opt(config, "group_file"))
    with _DRIVERS_LOCK:
        slot = _DRIVERS.get(key)
        if slot is None:
            slot = _DRIVERS[key] = [_make_driver(config, gen, mod, api), 0]
        slot[1] += 1
        return key, slot[0]


def _release_driver(key) -> None:
    with _DRIVERS_LOCK:
        slot = _DRIVERS.get(key)
        if slot is not None:
            slot[1] -= 1
            if slot[1] <= 0:
                del _DRIVERS[key]        # the driver (and its engine) goes with the last user


def _topic_exists(driver, name) -> Optional[bool]:
    f = getattr(driver, "topic_exists", None)
    if f is None:
        return None
    try:
        return bool(f(name))
    except TypeError:
        return bool(f(name=name))


def _create_topic(driver, name) -> None:
    try:
        driver.create_topic(name)
        if hasattr(driver, "add_default_partition"):
            driver.add_default_partition(name, 0)
    except Exception as e:
        exists = _topic_exists(driver, name)
        if exists:                            # another leader created it meanwhile
            return
        if exists is None:                    # cannot tell: open_topic will
            log.debug("creating Mofka topic %s: %s", name, e)
            return
        raise


def _thread_pool(conn):
    """A thread pool of one execution stream of its own for a producer or consumer, where the
    driver makes them (diaspora >= 0.4).  The default (0 threads) runs the batch work in the
    caller's Argobots pool, i.e. only while the caller blocks inside a wait(): polled futures
    would never complete."""
    make = getattr(conn.driver, "make_thread_pool", None)
    if make is None:
        return {}
    return {"thread_pool": make(1)}


class _Connection:
    """The driver and topic a transport or source works through."""

    def __init__(self, config, role: str):
        check_config(config)
        self.gen, self.mod = detect_generation()
        self.api = client_api(self.gen, self.mod)
        self.topic_name = opt(config, "topic")
        self.group_file = opt(config, "group_file")
        self.backend = opt(config, "driver") or "mofka"
        self.protocol = group_protocol(self.group_file) if self.group_file else None
        wanted = opt(config, "protocol")
        if wanted and self.protocol and wanted != self.protocol:
            log.warning("mofka_protocol=%s has no effect: the group file %s names %s",
                        wanted, self.group_file, self.protocol)
        self._key = None
        self.driver = self.topic = None
        try:
            self._key, self.driver = _acquire_driver(config, self.gen, self.mod, self.api)
            if opt(config, "create_topic") and not _topic_exists(self.driver, self.topic_name):
                _create_topic(self.driver, self.topic_name)
            self.topic = self.driver.open_topic(self.topic_name)
        except Exception as e:   # the clients raise their own Exception (a RuntimeError)
            self.close()
            from flowcept.config import ConfigError
            if isinstance(e, (TransportUnavailable, ConfigError)):
                raise
            raise TransportUnavailable(
                f"Mofka ({self.gen}, driver {self.backend}) topic {self.topic_name!r} via group "
                f"file {self.group_file!r} is unavailable for the {role}: {e}; check that the "
                "servers run and the topic exists (or set mofka_create_topic)") from None

    def close(self) -> None:
        self.topic = None
        self.driver = None
        if self._key is not None:
            _release_driver(self._key)
            self._key = None

    def abandon(self) -> None:
        """Forgets the driver without destroying it (see MofkaTransport._reconnect)."""
        if self._key is not None:
            with _DRIVERS_LOCK:
                slot = _DRIVERS.pop(self._key, None)
            if slot is not None:
                _abandon(slot[0])
            self._key = None
        if self.topic is not None:
            _abandon(self.topic)
        self.topic = self.driver = None


def open_topic(config, role: str) -> _Connection:
    return _Connection(config, role)


# -- leader side --------------------------------------------------------------------------
class MofkaTransport(Transport):
    name = "mofka"
    spool_fallback = True

    def __init__(self, config, job):
        super().__init__(config, job)
        self.conn = _Connection(config, "producer")
        self.gen, self.api = self.conn.gen, self.conn.api
        self.timeout_s = float(opt(config, "timeout_s") or 30.0)
        self._retry_at = 0.0
        try:
            self.producer = self._open_producer()
        except TransportUnavailable:
            self.conn.close()
            raise
        # frames pushed but not confirmed: handed back by take_unflushed
        self._pending: List[Tuple[bytes, bytes]] = []
        self._futures = []
        self.batches = 0
        self._broken = False       # a push or flush failed: the producer may be wedged

    @property
    def delivered(self) -> int:
        return self.batches

    def _open_producer(self):
        name = f"flowcept_{self.job.node}"
        try:
            return self.conn.topic.producer(name, ordering=self.conn.mod.Ordering.Loose,
                                            **_thread_pool(self.conn))
        except Exception as e:
            raise TransportUnavailable(
                f"Mofka producer for topic {self.conn.topic_name!r}: {e}") from None

    def _reconnect(self) -> None:
        """After a failure: the wedged producer and its driver are abandoned (their
        destructors would block on the batch in flight) and a new connection is made from
        the group file, which a restarted server rewrites.  At most once a second."""
        now = time.monotonic()
        if now < self._retry_at:
            raise TransportUnavailable("Mofka transport failed; retrying the connection later")
        self._retry_at = now + 1.0
        if self.producer is not None:
            _abandon(self.producer)
            self.producer = None
        if self.conn is not None:
            self.conn.abandon()
            self.conn = None
        self.conn = _Connection(self.config, "producer")
        self.producer = self._open_producer()
        self._broken = False
        log.info("mofka transport: reconnected to %s", self.conn.group_file)

    def publish(self, key, frame) -> None:
        if self.producer is None and not self._broken:
            raise TransportUnavailable("Mofka transport is closed")
        if self._broken:
            self._reconnect()
        data = bytes(frame)       # our copy: the caller may reuse its buffer
        meta = encode_metadata(key, self.job.job_name, self.job.node, len(data))
        try:
            fut = self.producer.push(meta, data)
        except Exception as e:
            self._broken = True
            raise TransportUnavailable(f"Mofka push failed: {e}") from None
        self._pending.append((bytes(key), data))
        self._futures.append(fut)

    def flush(self) -> None:
        if not self._pending:
            return
        if self.producer is None:
            raise TransportUnavailable("Mofka transport is closed")
        deadline = time.monotonic() + self.timeout_s
        try:
            # Starts sending every pending batch.  Its future is not waited: in Mofka 0.8.2
            # its `completed` turns true only inside wait(), whose finite timeouts misbehave
            # and whose 0/-1 never return if the server is gone.  Each push future is set when
            # its batch was stored (or failed), and its `completed` can be polled.
            self.producer.flush()
            for fut in self._futures:   # each push: its event id, or the error of its batch
                if fut is None:
                    continue
                done, _ = _wait(fut, self.api, max(0.0, deadline - time.monotonic()) or _POLL_S)
                if not done:
                    self._broken = True
                    raise TransportUnavailable(
                        f"Mofka did not confirm the pushed batches within {self.timeout_s:g} s "
                        f"({len(self._pending)} pending)")
        except TransportUnavailable:
            raise
        except Exception as e:
            self._broken = True
            raise TransportUnavailable(f"Mofka flush failed: {e}") from None
        self.batches += len(self._pending)
        self._pending, self._futures = [], []

    def take_unflushed(self):
        out, self._pending, self._futures = self._pending, [], []
        return out

    def close(self) -> None:
        if self.producer is None and self.conn is None:
            return
        try:
            if self.producer is not None and not self._broken:
                self.flush()
        finally:
            if self._broken and self.producer is not None:
                # A batch stuck in flight to a server that went away: the producer's destructor
                # would join its sending thread, i.e. block forever (holding the GIL).  It is
                # kept alive to the end of the process instead.
                _abandon(self.producer)
            self.producer = None
            if self.conn is not None:
                self.conn.close()
                self.conn = None


def _abandon(obj) -> None:
    """Never deallocated, not even at interpreter exit (the OS reclaims it)."""
    import ctypes
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


BACKEND = MofkaTransport


# -- keeper side --------------------------------------------------------------------------
class MofkaEntry(Entry):
    """One event read back: ``key`` and ``frame`` (bytes or None), ``routing()``."""
    __slots__ = ("event", "partition", "done", "seq", "error")

    def __init__(self, event, source, seq):
        super().__init__(None, source=source, id=getattr(event, "event_id", None))
        self.event = event
        self.seq = seq
        self.done = False
        self.error = None
        self.partition = _partition_key(event)
        try:
            meta = decode_metadata(event.metadata)
            self.key = meta.get("key") if isinstance(meta.get("key"), bytes) else None
            self.job, self.node = meta.get("job"), meta.get("node")
        except Exception as e:     # undecodable metadata: the keeper quarantines it
            self.error = f"metadata error: {e}"
        try:
            data = event.data
            if isinstance(data, (list, tuple)):
                data = b"".join(bytes(d) for d in data)
            self.frame = bytes(data) if data is not None else None
        except Exception as e:
            self.error = (self.error + "; " if self.error else "") + f"data error: {e}"

    def routing(self) -> dict:
        out = super().routing()
        out["partition"] = self.partition
        if self.error:
            out["error"] = self.error
        return out


def _partition_key(event) -> str:
    try:
        p = event.partition
    except Exception:
        return ""
    if p is None:
        return ""
    try:
        return json.dumps(p, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(p)


class MofkaSource(Source):
    """A keeper's consumer of the topic (events acknowledged after commit).

    ``read(count, block_ms)`` returns up to ``count`` entries, waiting up to
    ``block_ms`` for the first one (None or 0: no wait).  ``ack(entries)``
    takes entries committed or quarantined; per partition, the server's cursor
    moves to the end of the contiguous acknowledged run only.  Entries passed
    to ``redeliver(entries)`` are returned again by the next reads (Mofka
    delivers an event once per consumer session); after a restart under the
    same consumer name the server delivers everything past the cursor."""

    name = "mofka"

    def __init__(self, config, consumer: str):
        if not consumer:
            raise _config_error("the Mofka source needs a stable consumer name (the keeper's "
                                "--name): Mofka keeps the read position per consumer name")
        super().__init__(config, consumer)
        self.conn = _Connection(config, f"consumer {consumer!r}")
        self.gen, self.api = self.conn.gen, self.conn.api
        self.source = f"mofka:{self.conn.topic_name}"
        try:
            self._consumer = self.conn.topic.consumer(consumer, **_thread_pool(self.conn))
        except Exception as e:
            self.conn.close()
            raise TransportUnavailable(f"Mofka consumer {consumer!r}: {e}") from None
        self._future = None
        self._held: Dict[str, deque] = {}     # partition -> entries read, oldest first
        self._again: deque = deque()          # entries handed back by redeliver()
        self._seq = 0
        self.counts = {"read": 0, "acked": 0, "acknowledged_calls": 0, "redelivered": 0}

    # -- reading --------------------------------------------------------------
    def redeliver(self, entries) -> None:
        """These were not committed: the next reads return them again, oldest first."""
        mine = sorted((e for e in entries if isinstance(e, MofkaEntry) and not e.done),
                      key=lambda e: e.seq)
        queued = {id(e) for e in self._again}
        self._again.extend(e for e in mine if id(e) not in queued)

    def read(self, count: int, block_ms: Optional[int]) -> List[MofkaEntry]:
        if self._consumer is None:
            raise TransportUnavailable("Mofka source is closed")
        if self._again:
            again = []
            while self._again and len(again) < count:
                e = self._again.popleft()
                if not e.done:
                    again.append(e)
            if again:
                self.counts["redelivered"] += len(again)
                return again
        out: List[MofkaEntry] = []
        wait_s = (block_ms or 0) / 1000.0
        try:
            while len(out) < count:
                if self._future is None:
                    self._future = self._consumer.pull()
                done, event = _wait(self._future, self.api, None if out else wait_s)
                if not done:
                    break                 # nothing more now; keep the future for next time
                self._future = None
                if event is None or getattr(event, "event_id", 0) is None:
                    break                 # no more events (topic complete, or caught up)
                self._seq += 1
                entry = MofkaEntry(event, self.source, self._seq)
                self._held.setdefault(entry.partition, deque()).append(entry)
                out.append(entry)
        except Exception as e:
            raise TransportUnavailable(f"Mofka pull failed: {e}") from None
        self.counts["read"] += len(out)
        return out

    # -- acknowledging --------------------------------------------------------
    def ack(self, entries) -> None:
        """Marks entries (committed or quarantined) and acknowledges, per partition, the
        last one of the contiguous acknowledged run from the oldest held entry."""
        for e in entries:
            if isinstance(e, MofkaEntry):
                e.done = True
        for part, dq in self._held.items():
            run = 0
            for e in dq:
                if not e.done:
                    break
                run += 1
            if not run:
                continue
            last = dq[run - 1]
            try:
                last.event.acknowledge()
            except Exception as e:
                raise TransportUnavailable(f"Mofka acknowledge failed: {e}") from None
            for _ in range(run):
                dq.popleft()
            self.counts["acked"] += run
            self.counts["acknowledged_calls"] += 1
        for part in [p for p, dq in self._held.items() if not dq]:
            del self._held[part]

    def info(self) -> dict:
        return {"name": self.name, "topic": self.conn.topic_name if self.conn else None,
                "consumer": self.consumer, "generation": self.gen,
                "driver": self.conn.backend if self.conn else None,
                "protocol": self.conn.protocol if self.conn else None,
                "held": sum(len(dq) for dq in self._held.values()), **self.counts}

    def close(self) -> None:
        self._future = None
        self._consumer = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


SOURCE = MofkaSource
