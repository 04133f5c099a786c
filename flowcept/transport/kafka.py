"""Kafka transport (leader side) and consumer-group source (keeper side),
with confluent-kafka (librdkafka).

Leader: each batch frame is one Kafka message, key = the 24-byte batch id,
headers ``job`` and ``node``, sent to partition ``route(job, partitions)``
(flowcept.transport: a job's consecutive node names fill the partitions
evenly) so that one node's batches keep their order.  One transport routes
any (job, node) through one producer (``publish(..., job=)``: the bridge).  The producer is idempotent
(``enable.idempotence``, ``acks=all``): a retry inside librdkafka never
writes a message twice.  ``publish`` only hands the frame to librdkafka
(which copies it); ``flush`` waits for every delivery report and raises
TransportUnavailable unless all of them succeeded.  After a failure the
batches without a successful report come back from ``take_unflushed()``
(the leader spools them), the producer is dropped (its queue purged) and a
new one is made on the next try, after ``spool_retry_ms``.

Keeper: ``KafkaSource`` is a member of the consumer group ``kafka_group``
(auto-commit off).  Offsets are committed synchronously in ``ack`` only,
i.e. after every store committed; ``redeliver`` seeks each partition back
to the first entry not committed.  A keeper that dies loses its partitions
at the next rebalance (``kafka_session_timeout_ms``); the new owner starts
at the last committed offset and the stores skip what they already hold
(batch ids), so a rebalance loses and doubles nothing.

URL: ``kafka://host:port[,host:port...]/topic`` in ``transport_url`` (the
topic defaults to ``kafka_topic``).  The topic is created with
``kafka_partitions`` partitions if it does not exist; whoever connects first
creates it.  A process whose ``kafka_partitions`` was set explicitly (file,
environment, ``-o``) and differs from the existing topic's is told: a
keeper fails with a one-line fix, a job's leader logs a warning and goes
on (it must not stop the science).
"""
from __future__ import annotations

import functools
import logging
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from flowcept.config import ConfigError, Option
from flowcept.transport import Entry, RouteCache, Source, Transport, TransportUnavailable, route

log = logging.getLogger("flowcept.transport.kafka")

DEFAULT_URL = "kafka://127.0.0.1:9092/flowcept"
HEADER_JOB = "job"
HEADER_NODE = "node"


def _settings_check(text: str):
    try:
        parse_settings(text)
    except ValueError as e:
        return str(e)
    return None


OPTIONS = (
    Option("topic", str, "flowcept", "topic when transport_url names none"),
    Option("partitions", int, 8, "partitions of a topic this creates (>= the keepers you run)",
           range=(1, 1 << 16)),
    Option("replication", int, 1, "replication factor of a topic this creates", range=(1, 64)),
    Option("group", str, "flowcept-keepers", "consumer group of the keepers"),
    Option("compression", str, "none", "producer compression",
           choices=("none", "gzip", "snappy", "lz4", "zstd")),
    Option("linger_ms", int, 5, "producer: wait this long to fill a request", range=(0, 60_000)),
    Option("flush_timeout_ms", int, 15_000, "flush: longest wait for delivery reports",
           range=(100, 3_600_000)),
    Option("session_timeout_ms", int, 6000, "keeper: a silent member loses its partitions after "
           "this long", range=(1000, 3_600_000)),
    Option("client", str, "", "extra librdkafka settings, 'key=value;key=value' "
           "(e.g. security.protocol=SSL;ssl.ca.location=/etc/ca.pem)", check=_settings_check),
)


def parse_settings(text: str) -> Dict[str, str]:
    out = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"{part!r} is not key=value; write e.g. "
                             "'security.protocol=SSL;ssl.ca.location=/etc/ca.pem'")
        out[k.strip()] = v.strip()
    return out


def parse_url(text: str, default_topic: str = "flowcept") -> Tuple[str, str]:
    """(bootstrap servers, topic) of a kafka:// URL; validated."""
    url = (text or DEFAULT_URL).strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ConfigError(f"transport_url {url!r}: not a Kafka URL; use "
                          "kafka://host:port[,host:port]/topic")
    hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
    for h in hosts:
        if "@" in h:
            raise ConfigError(f"transport_url {url!r}: put credentials in kafka_client "
                              "(sasl.username=...;sasl.password=...), not in the URL")
    topic = parts.path.strip("/") or default_topic
    if not topic or "/" in topic:
        raise ConfigError(f"transport_url {url!r}: bad topic {topic!r}; one name after the host list")
    return ",".join(h if ":" in h else f"{h}:9092" for h in hosts), topic


def _kafka():
    try:
        import confluent_kafka
    except ImportError:
        raise TransportUnavailable("the kafka transport needs confluent-kafka: "
                                   "pip install 'flowcept[kafka]' (or pip install confluent-kafka)"
                                   ) from None
    return confluent_kafka


def _base_settings(config, bootstrap: str) -> dict:
    s = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000,
         "log_level": 3 if log.isEnabledFor(logging.INFO) else 0}
    s.update(parse_settings(config.kafka_client))
    return s


def _quiet_logger(settings: dict) -> dict:
    # librdkafka prints connection failures to stderr by default; the
    # transport reports them itself (one line, with the fix)
    settings.setdefault("logger", log)
    return settings


def partitions_mismatch(config, topic: str, partitions: int) -> Optional[str]:
    """The one-line message when ``kafka_partitions`` was set explicitly and
    the existing topic has another count (else None)."""
    origin = config.origins.get("kafka_partitions")
    want = config.kafka_partitions
    if origin is None or want == partitions:
        return None
    return (f"topic {topic!r} already has {partitions} partitions, not kafka_partitions={want} "
            f"(from {origin}): the process that connects first creates the topic; use "
            f"kafka_partitions={partitions}, or a new topic in transport_url, or add partitions "
            f"on the broker (kafka-topics.sh --alter --topic {topic} --partitions {want})")


def ensure_topic(config, bootstrap: str, topic: str, timeout: float = 5.0) -> int:
    """The topic's partition count; creates the topic when it is missing."""
    ck = _kafka()
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(_quiet_logger(_base_settings(config, bootstrap)))
    where = f"Kafka at {bootstrap}"
    try:
        md = admin.list_topics(timeout=timeout)
    except ck.KafkaException as e:
        raise TransportUnavailable(f"{where} is unreachable ({e.args[0].str() if e.args else e}); "
                                   "start the broker or fix transport_url") from None
    t = md.topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        return len(t.partitions)
    size = max(1 << 20, config.batch_bytes + (64 << 10))
    nt = NewTopic(topic, num_partitions=config.kafka_partitions,
                  replication_factor=config.kafka_replication,
                  config={"max.message.bytes": str(size)})
    futures = admin.create_topics([nt], request_timeout=timeout)
    try:
        futures[topic].result(timeout=timeout)   # keep admin alive until answered
    except ck.KafkaException as e:
        err = e.args[0] if e.args else None
        if err is None or err.code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
            raise TransportUnavailable(f"{where}: cannot create topic {topic!r} ({e}); create it "
                                       "or fix kafka_partitions/kafka_replication") from None
    except Exception as e:
        raise TransportUnavailable(f"{where}: cannot create topic {topic!r} ({e})") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return len(t.partitions)
        time.sleep(0.05)
    return config.kafka_partitions


# -- leader side ------------------------------------------------------------
class KafkaTransport(Transport):
    name = "kafka"
    url_schemes = ("kafka",)
    spool_fallback = True

    def __init__(self, config, job):
        super().__init__(config, job)
        self.bootstrap, self.topic = parse_url(config.transport_url, config.kafka_topic)
        self._route = RouteCache(self._routing)     # (job, node) -> (partition, headers)
        # token -> (key, frame) until its delivery report (one token per
        # publish: the same batch may be published twice, e.g. spool replay)
        self._unconfirmed: Dict[int, Tuple[bytes, bytes]] = {}
        self._token = 0
        self._errors: List[str] = []
        self._retry_s = config.spool_retry_ms / 1000
        self._down_until = 0.0
        self._down_reason = ""
        self._producer = None
        self._warned = False
        self.partitions = 1
        self.batches = 0
        self.bytes = 0
        self._connect()     # rule 1: connect now or say why not

    def _connect(self) -> None:
        ck = _kafka()
        self.partitions = ensure_topic(self.config, self.bootstrap, self.topic)
        self._route.clear()
        problem = partitions_mismatch(self.config, self.topic, self.partitions)
        if problem and not self._warned:
            self._warned = True
            log.warning("flowcept: %s", problem)
        size = max(1 << 20, self.config.batch_bytes + (64 << 10))
        settings = _base_settings(self.config, self.bootstrap)
        settings.update({
            "enable.idempotence": True, "acks": "all",
            "compression.type": self.config.kafka_compression,
            "linger.ms": self.config.kafka_linger_ms,
            "message.max.bytes": size,
            "message.timeout.ms": self.config.kafka_flush_timeout_ms,
        })
        try:
            self._producer = ck.Producer(_quiet_logger(settings))
        except ck.KafkaException as e:
            raise TransportUnavailable(f"Kafka producer for {self.bootstrap}: {e}") from None

    any_job = True

    @property
    def partition(self) -> int:
        """The partition of this transport's own (job, node)."""
        return self._route(self.job)[0]

    @property
    def delivered(self) -> int:
        return self.batches

    def destination(self) -> str:
        return f"kafka://{self.bootstrap}/{self.topic}"

    def _routing(self, job) -> Tuple[int, list]:
        return (route(job, max(1, self.partitions)),
                [(HEADER_JOB, job.job_name.encode("utf-8", "surrogateescape")),
                 (HEADER_NODE, job.node.encode("utf-8", "surrogateescape"))])

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise TransportUnavailable(self._down_reason)
        if self._producer is None:
            try:
                self._connect()
            except TransportUnavailable as e:
                self._mark_down(str(e))
                raise
            self._down_until = 0.0

    def _mark_down(self, reason: str) -> None:
        self._down_reason = reason
        self._down_until = time.monotonic() + self._retry_s
        log.warning("flowcept: %s; batches go to the spool, retry in %.1f s", reason, self._retry_s)

    def _drop_producer(self) -> None:
        p, self._producer = self._producer, None
        if p is None:
            return
        try:   # drop what librdkafka still holds: those batches are spooled by the caller
            p.purge()
            p.poll(0)
        except Exception:
            pass
        self._errors = []     # the purge reports every dropped message as failed

    def _report(self, token, err, msg) -> None:
        if err is None:
            item = self._unconfirmed.pop(token, None)
            if item is not None:
                self.batches += 1
                self.bytes += len(item[1])
        else:
            self._errors.append(err.str() if hasattr(err, "str") else str(err))

    def publish(self, key, frame, job=None) -> None:
        self._check_up()
        partition, headers = self._route(job or self.job)
        key, frame = bytes(key), bytes(frame)
        self._token += 1
        token = self._token
        self._unconfirmed[token] = (key, frame)
        report = functools.partial(self._report, token)
        while True:
            try:
                self._producer.produce(self.topic, value=frame, key=key, partition=partition,
                                       headers=headers, on_delivery=report)
                break
            except BufferError:           # librdkafka's queue is full: wait for reports
                self._producer.poll(0.1)
            except Exception as e:        # e.g. message too large
                self._unconfirmed.pop(token, None)
                raise TransportUnavailable(f"Kafka at {self.bootstrap} refused a "
                                           f"{len(frame)}-byte batch: {e}") from None
        self._producer.poll(0)

    def flush(self) -> None:
        if self._producer is None:
            if not self._unconfirmed:
                return
            self._check_up()
        if not self._unconfirmed and not self._errors:
            return
        left = self._producer.flush(self.config.kafka_flush_timeout_ms / 1000)
        if left or self._errors or self._unconfirmed:
            why = self._errors[0] if self._errors else f"{left or len(self._unconfirmed)} " \
                "batches without a delivery report"
            msg = f"Kafka at {self.bootstrap} (topic {self.topic}) did not confirm: {why}"
            self._errors = []
            self._drop_producer()
            self._mark_down(msg)
            raise TransportUnavailable(msg)
        self._down_until = 0.0

    def take_unflushed(self) -> List[Tuple[bytes, bytes]]:
        out = list(self._unconfirmed.values())
        self._unconfirmed = {}
        return out

    def close(self) -> None:
        if self._producer is None and not self._unconfirmed:
            return
        try:
            self.flush()
        finally:
            self._producer = None


BACKEND = KafkaTransport


# -- keeper side -----------------------------------------------------------
def _header(msg, name: str):
    for k, v in msg.headers() or ():
        if k == name:
            return v
    return None


class KafkaSource(Source):
    """A keeper's membership in the consumer group of the topic."""

    def __init__(self, config, consumer: str):
        super().__init__(config, consumer)
        self.bootstrap, self.topic = parse_url(config.transport_url, config.kafka_topic)
        self.group = config.kafka_group
        self.name = f"kafka://{self.bootstrap}/{self.topic}"
        self._consumer = None
        self._subscribed = False
        self._broken = ""
        self.rebalances = 0
        self.partitions = 0

    def _on_error(self, err) -> None:
        # every broker gone (e.g. restarted without its data): the next read
        # makes a new consumer, which creates the topic again and rejoins
        if err.code() == _kafka().KafkaError._ALL_BROKERS_DOWN:
            self._broken = err.str()

    def _open(self):
        ck = _kafka()
        if self._consumer is None:
            settings = _base_settings(self.config, self.bootstrap)
            settings.update({
                "group.id": self.group, "client.id": self.consumer,
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.config.kafka_session_timeout_ms,
                "heartbeat.interval.ms": max(100, self.config.kafka_session_timeout_ms // 3),
                "max.poll.interval.ms": max(self.config.kafka_session_timeout_ms, 300_000),
                "fetch.message.max.bytes": max(1 << 20, self.config.batch_bytes + (64 << 10)),
                "topic.metadata.refresh.interval.ms": 5000,
                "error_cb": self._on_error,
            })
            try:
                self._consumer = ck.Consumer(_quiet_logger(settings))
            except ck.KafkaException as e:
                raise TransportUnavailable(f"Kafka consumer for {self.bootstrap}: {e}") from None
        return self._consumer

    def _subscribe(self) -> None:
        n = ensure_topic(self.config, self.bootstrap, self.topic)
        problem = partitions_mismatch(self.config, self.topic, n)
        if problem:
            raise ConfigError(problem)
        self.partitions = n

        def on_change(_consumer, _partitions):
            self.rebalances += 1
        self._open().subscribe([self.topic], on_assign=on_change, on_revoke=on_change)
        self._subscribed = True

    def read(self, count: int, block_ms: Optional[int]) -> List[Entry]:
        ck = _kafka()
        if self._broken:
            why, self._broken = self._broken, ""
            self.close()
            raise TransportUnavailable(f"Kafka at {self.bootstrap} is unreachable ({why}); start "
                                       "the broker or fix transport_url")
        if not self._subscribed:
            self._subscribe()
        try:
            msgs = self._consumer.consume(num_messages=count,
                                          timeout=(block_ms or 0) / 1000)
        except ck.KafkaException as e:
            raise TransportUnavailable(f"Kafka at {self.bootstrap}: {e}") from None
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    continue
                if err.code() in (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._TRANSPORT):
                    raise TransportUnavailable(f"Kafka at {self.bootstrap} is unreachable "
                                               f"({err.str()}); start the broker or fix "
                                               "transport_url")
                if err.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    # e.g. a broker that lost its topics: create it again, rejoin
                    self._subscribed = False
                    raise TransportUnavailable(f"Kafka at {self.bootstrap}: {err.str()}")
                log.warning("keeper source %s: %s", self.name, err.str())
                continue
            out.append(Entry(m.value(), m.key(), _header(m, HEADER_JOB), _header(m, HEADER_NODE),
                             self.name, (m.topic(), m.partition(), m.offset())))
        return out

    def ack(self, entries) -> None:
        ck = _kafka()
        nxt: Dict[Tuple[str, int], int] = {}
        for e in entries:
            t, p, o = e.id
            nxt[(t, p)] = max(nxt.get((t, p), -1), o + 1)
        if not nxt:
            return
        offsets = [ck.TopicPartition(t, p, o) for (t, p), o in sorted(nxt.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as e:
            # not committed (e.g. the partition moved in a rebalance): delivered
            # again, to us or to the new owner, and the stores skip it
            raise TransportUnavailable(f"Kafka at {self.bootstrap}: offset commit failed: {e}"
                                       ) from None

    def redeliver(self, entries) -> None:
        """Seek each partition back to its first uncommitted entry."""
        ck = _kafka()
        first: Dict[Tuple[str, int], int] = {}
        for e in entries:
            t, p, o = e.id
            first[(t, p)] = min(first.get((t, p), o), o)
        for (t, p), o in first.items():
            try:
                self._consumer.seek(ck.TopicPartition(t, p, o))
            except ck.KafkaException as e:
                # no longer ours: the next owner starts at the committed offset
                log.info("keeper source %s: seek %s[%d]@%d: %s", self.name, t, p, o, e)

    def info(self) -> dict:
        """Per-partition committed offset, high watermark and the group's lag."""
        ck = _kafka()
        c = self._open()
        out = {"topic": self.topic, "group": self.group}
        try:
            md = c.list_topics(topic=self.topic, timeout=5)
            parts = sorted((md.topics.get(self.topic).partitions or {}).keys())
            tps = [ck.TopicPartition(self.topic, p) for p in parts]
            committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=5)}
            lag = 0
            length = 0
            done = 0
            for p in parts:
                lo, hi = c.get_watermark_offsets(ck.TopicPartition(self.topic, p), timeout=5)
                at = committed.get(p, -1)
                length += hi - lo
                done += max(at, 0)
                # max(0, ...): some Kafka-protocol brokers (Tansu 0.6) report
                # watermarks behind the offsets they hand out
                lag += max(0, hi - (at if at >= 0 else lo))
        except (ck.KafkaException, AttributeError) as e:
            return {**out, "error": f"Kafka at {self.bootstrap}: {e}"}
        out.update(partitions=len(parts), length=length, committed=done,
                   groups=[{"name": self.group, "pending": lag, "lag": lag,
                            "consumers": len(c.assignment())}])
        return out

    def unread(self) -> Optional[int]:
        if not self._subscribed:
            return None
        groups = self.info().get("groups") or [{}]
        return groups[0].get("lag")

    def close(self) -> None:
        c, self._consumer = self._consumer, None
        self._subscribed = False
        if c is not None:
            try:
                c.close()     # leaves the group now: its partitions move at once
            except Exception:
                pass


SOURCE = KafkaSource
