"""Mofka transport (leader side) and event source (keeper side).

Coded against Mofka's real Python clients; Mofka is not installable on the
machines this was written on, so the live path is exercised only by
tests/transport/test_mofka.py where the module exists (see docs/transports.md).

Two client generations are supported, detected at connect time:

* ``mochi.mofka.client`` (Mofka <= 0.6).  Source: mochi-hpc/mofka,
  python/mochi/mofka/client.py (``class MofkaDriver(pymofka_client.MofkaDriver):
  def __init__(self, group_file, arg=None)`` where ``arg`` is a
  ``pymargo.core.Engine``, a protocol string or a margo instance id; the
  deprecated ``ServiceHandle`` is the same class) and docs/_code/producer.py
  / consumer.py (``driver.open_topic(name)``, ``topic.producer()``,
  ``producer.push(metadata=..., data=...)``, ``producer.flush()``,
  ``topic.consumer(name=...)``, ``consumer.pull().wait()``,
  ``event.metadata``, ``event.acknowledge()``); tests/python/
  test_mofka_producer.py: ``topic.producer(name, batchsize, thread_pool,
  ordering)`` with ``mofka.AdaptiveBatchSize``, ``mofka.ThreadPool(0)``,
  ``mofka.Ordering.Strict``.
* ``diaspora_stream.api`` (Mofka >= 0.7, the Diaspora Stream API).  Source:
  diaspora-project/diaspora-stream-api, python/diaspora_stream/
  test_producer.py / test_consumer.py (``Driver.new(backend, metadata=...)``,
  ``driver.open_topic(name)``, ``topic.producer(name, batch_size=...,
  max_num_batches=..., thread_pool=..., options={}, ordering=Ordering.Loose)``,
  ``producer.push(metadata, data).wait()``, ``producer.flush()``,
  ``topic.consumer(name)``, ``consumer.pull().wait()``, ``event.event_id``
  (None = no more events), ``event.data`` (list of buffers),
  ``event.acknowledge()``); the Mofka driver takes
  ``{"group_file": ..., "margo": {"use_progress_thread": true}}`` (its C++
  example) and is also reachable as ``Driver(backend="mofka", options=...)``.

Each batch is one event: the frame is the *data* part; the *metadata* part
is a small JSON object with the routing fields (key in hex, job, node,
frame length, format version).  Mofka does not copy the data until the
producer flushes, so the transport keeps every pushed frame (a bytes copy)
alive until ``flush()`` returned.
"""
from __future__ import annotations

import json
import logging
import re
from typing import List, Optional, Tuple

from flowcept.transport import Transport, TransportUnavailable

log = logging.getLogger("flowcept.transport.mofka")

GEN_DIASPORA = "diaspora_stream.api"
GEN_CLIENT = "mochi.mofka.client"

# Mercury protocols Mofka is deployed with; others must at least look like one.
KNOWN_PROTOCOLS = ("na+sm", "ofi+tcp", "ofi+verbs", "ofi+cxi", "cxi", "ofi+shm", "tcp",
                   "ucx+all", "ucx+rc", "ucx+tcp", "ofi+gni", "ofi+psm2", "ofi+opx", "bmi+tcp")
_PROTOCOL_RE = re.compile(r"^[a-z0-9_]+(\+[a-z0-9_]+)?(://.*)?$")


def check_protocol(protocol: str) -> str:
    """Validates a Mercury protocol name (``mofka_protocol``)."""
    from flowcept.config import ConfigError
    p = (protocol or "").strip()
    if not p or not _PROTOCOL_RE.match(p):
        raise ConfigError(f"mofka_protocol={protocol!r}: not a Mercury protocol; use one of "
                          f"{', '.join(KNOWN_PROTOCOLS[:5])} (the one your Mofka servers listen on)")
    return p


def check_config(config) -> None:
    """Configuration checks that need no Mofka installed."""
    from flowcept.config import ConfigError
    check_protocol(config.mofka_protocol)
    if not config.mofka_group_file:
        raise ConfigError("transport=mofka needs mofka_group_file: the group file written by the "
                          "Mofka servers (bedrock), e.g. FLOWCEPT_MOFKA_GROUP_FILE=/path/mofka.json")
    if not config.mofka_topic:
        raise ConfigError("transport=mofka needs mofka_topic, e.g. flowcept")


def encode_metadata(key: bytes, job: str, node: str, length: int) -> dict:
    """The routing metadata of one batch event (small; the frame is the data)."""
    from flowcept.layout import FORMAT_VERSION
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


def detect_generation(importer=None) -> Tuple[str, object]:
    """(generation, module) of the installed Mofka client; diaspora first.
    Raises TransportUnavailable naming both when neither imports."""
    import importlib
    importer = importer or importlib.import_module
    errors = []
    for name in (GEN_DIASPORA, GEN_CLIENT):
        try:
            return name, importer(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise TransportUnavailable(
        "the mofka transport needs Mofka's Python client, found neither generation ("
        + "; ".join(errors) + "); install Mofka (e.g. `spack install mofka +python`) and load it "
        "into this environment, or use transport=redis")


def _margo_engine(protocol: str):
    """A Margo engine with a progress thread, for the configured protocol."""
    try:
        from mochi.margo import Engine     # newer py-mochi-margo
        return Engine(protocol, use_progress_thread=True)
    except ImportError:
        pass
    try:
        import pymargo
        from pymargo.core import Engine
        return Engine(protocol, mode=pymargo.client, use_progress_thread=True)
    except ImportError as e:
        raise TransportUnavailable(f"the mofka transport needs pymargo (py-mochi-margo): {e}") from None


def open_topic(config, role: str):
    """(generation, driver, topic, keepalive) for the configured topic."""
    check_config(config)
    gen, mod = detect_generation()
    keep = []
    try:
        if gen == GEN_DIASPORA:
            options = {"group_file": config.mofka_group_file,
                       "margo": {"use_progress_thread": True, "protocol": config.mofka_protocol}}
            Driver = mod.Driver
            try:
                driver = Driver.new("mofka", metadata=options)
            except (AttributeError, TypeError):
                driver = Driver(backend="mofka", options=options)
        else:
            engine = _margo_engine(config.mofka_protocol)
            keep.append(engine)
            driver = mod.MofkaDriver(config.mofka_group_file, engine)
        topic = driver.open_topic(config.mofka_topic)
    except TransportUnavailable:
        raise
    except Exception as e:   # Mofka raises its own ClientException types
        raise TransportUnavailable(
            f"Mofka ({gen}) topic {config.mofka_topic!r} via group file {config.mofka_group_file!r} "
            f"({config.mofka_protocol}) is unavailable: {e}; check that the servers run and the "
            "topic exists (see docs/transports.md)") from None
    return gen, mod, driver, topic, keep


class MofkaTransport(Transport):
    name = "mofka"
    spool_fallback = True

    def __init__(self, config, job):
        super().__init__(config, job)
        self.gen, self.mod, self.driver, self.topic, self._keep = open_topic(config, "producer")
        name = f"flowcept-{job.node}"
        try:
            if self.gen == GEN_DIASPORA:
                self.producer = self.topic.producer(name, ordering=self.mod.Ordering.Loose)
            else:
                self.producer = self.topic.producer(name, self.mod.AdaptiveBatchSize,
                                                    self.mod.ThreadPool(1), self.mod.Ordering.Loose)
        except Exception as e:
            raise TransportUnavailable(f"Mofka producer for topic {config.mofka_topic!r}: {e}") from None
        # frames pushed but not flushed: Mofka reads them at flush time
        self._pending: List[Tuple[bytes, bytes]] = []
        self._futures = []
        self.batches = 0

    def publish(self, key, frame) -> None:
        data = bytes(frame)       # our copy, alive until flush returned
        meta = encode_metadata(key, self.job.job_name, self.job.node, len(data))
        try:
            fut = self.producer.push(meta, data)
        except Exception as e:
            raise TransportUnavailable(f"Mofka push failed: {e}") from None
        self._pending.append((bytes(key), data))
        self._futures.append(fut)

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            self.producer.flush()
            for fut in self._futures:
                if fut is not None and hasattr(fut, "wait"):
                    fut.wait()        # event id assigned: stored by the partition
        except Exception as e:
            raise TransportUnavailable(f"Mofka flush failed: {e}") from None
        self.batches += len(self._pending)
        self._pending, self._futures = [], []

    def take_unflushed(self):
        out, self._pending, self._futures = self._pending, [], []
        return out

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.producer = None
            self.topic = None
            self.driver = None
            for engine in self._keep:
                try:
                    engine.finalize()
                except Exception:
                    pass
            self._keep = []


BACKEND = MofkaTransport


class MofkaEntry:
    __slots__ = ("id", "frame", "key", "job", "node", "source", "event")

    def __init__(self, event, source):
        self.event = event
        self.id = getattr(event, "event_id", None)
        meta = decode_metadata(event.metadata)
        data = event.data
        if isinstance(data, (list, tuple)):
            data = b"".join(bytes(d) for d in data)
        self.frame = bytes(data) if data is not None else None
        self.key = meta.get("key")
        self.job = meta.get("job")
        self.node = meta.get("node")
        self.source = source

    def routing(self) -> dict:
        return {"id": self.id, "key": self.key.hex() if isinstance(self.key, bytes) else None,
                "job": self.job, "node": self.node, "source": self.source}


class MofkaSource:
    """A keeper's consumer of the topic (events acknowledged after commit)."""

    def __init__(self, config, consumer: str):
        self.gen, self.mod, self.driver, self.topic, self._keep = open_topic(config, "consumer")
        self.name = f"mofka:{config.mofka_topic}"
        try:
            if self.gen == GEN_DIASPORA:
                self.consumer = self.topic.consumer(consumer)
            else:
                self.consumer = self.topic.consumer(name=consumer)
        except Exception as e:
            raise TransportUnavailable(f"Mofka consumer {consumer!r}: {e}") from None
        self._future = None

    def read(self, count: int, block_ms: Optional[int]) -> List[MofkaEntry]:
        out = []
        try:
            while len(out) < count:
                if self._future is None:
                    self._future = self.consumer.pull()
                if out and hasattr(self._future, "completed") and not self._future.completed:
                    break          # do not wait for more once we hold some
                event = self._future.wait()
                self._future = None
                if getattr(event, "event_id", 0) is None:   # no more events (topic complete)
                    break
                try:
                    out.append(MofkaEntry(event, self.name))
                except Exception as e:      # undecodable metadata: quarantined by the keeper
                    bad = MofkaEntry.__new__(MofkaEntry)
                    bad.event, bad.id, bad.frame, bad.key = event, getattr(event, "event_id", None), None, None
                    bad.job = bad.node = None
                    bad.source = f"{self.name} (metadata error: {e})"
                    out.append(bad)
        except Exception as e:
            raise TransportUnavailable(f"Mofka pull failed: {e}") from None
        return out

    def ack(self, entries) -> None:
        # Acknowledging an event acknowledges every earlier one of its partition.
        if entries:
            try:
                entries[-1].event.acknowledge()
            except Exception as e:
                raise TransportUnavailable(f"Mofka acknowledge failed: {e}") from None

    def info(self) -> dict:
        return {"topic": self.name}

    def close(self) -> None:
        self.consumer = None
        for engine in self._keep:
            try:
                engine.finalize()
            except Exception:
                pass
