"""Observe a RabbitMQ exchange without touching its producers or consumers.

The adapter declares a queue of its own (durable, named after the exchange
unless ``queue=`` names it) and binds it to the exchange with
``binding_key`` (``#`` on a topic exchange: everything; ignored by fanout).
Every message routed there becomes one record (activity
``rabbitmq:<exchange>``): routing key, headers, content type, message id,
timestamp and a bounded summary of the body (its size, a sha256, and the
first ``body_preview_bytes`` as text when it decodes) in ``used``.

The position is the broker's: a message is acknowledged only after its
record is in the ring (and its id is in the checkpoint), so messages
published while the adapter is down wait in its queue and are emitted on
restart, nothing acknowledged is emitted again, and a message the broker
redelivers after a crash that came between the push and the
acknowledgement is acknowledged without a second record.  Record ids come from the message id when the producer set
one, else from a hash of routing key, headers, timestamp and body, so a
redelivery after a crash carries the same id.  The observed exchange and
its other queues are not affected: a fanout or topic exchange copies each
message to every bound queue.
"""
from __future__ import annotations

import hashlib
import time
from typing import Iterator, Optional

from flowcept.adapters.base import Adapter, Item
from flowcept.errors import ConfigError

from flowcept.config import Option

# settings keys <adapter>_<name> (file, FLOWCEPT_* environment, Flowcept(...) keywords)
OPTIONS = (
    Option("url", str, "", "amqp://user:password@host:port/vhost"),
    Option("exchange", str, "", "the exchange to observe"),
    Option("binding_key", str, "#", "binding key of the adapter's own queue"),
    Option("queue", str, "", "the adapter's queue (\"\" = flowcept.observe.<exchange>)"),
    Option("poll_interval", float, 0.5, "seconds between passes", range=(0, 86400)),
    Option("checkpoint", str, "", "unused: the broker's acknowledgements are the position"),
)


class RabbitmqAdapter(Adapter):
    name = "rabbitmq"
    default_poll_interval = 0.5
    acknowledges_at_source = True

    def __init__(self, session=None, *, url: str, exchange: str, binding_key: str = "#",
                 queue: Optional[str] = None, exchange_type: Optional[str] = None,
                 body_preview_bytes: int = 256, max_per_pass: int = 10000, **kw):
        super().__init__(session, **kw)
        if not url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"rabbitmq adapter: URL {url!r} must be amqp://user:pass@host:port/vhost")
        if not exchange:
            raise ConfigError("rabbitmq adapter: name the exchange to observe (--exchange)")
        self.url = url
        self.exchange = exchange
        self.binding_key = binding_key
        self.queue = queue or f"flowcept.observe.{exchange}"
        self.exchange_type = exchange_type
        self.body_preview_bytes = int(body_preview_bytes)
        self.max_per_pass = int(max_per_pass)
        self._conn = None
        self._ch = None

    def source_key(self) -> str:
        host = self.url.split("@")[-1]    # never the password
        return f"rabbitmq:{host}:{self.exchange}:{self.queue}"

    def open(self) -> None:
        try:
            import pika
        except ImportError:
            raise ConfigError("rabbitmq adapter: pika is not installed; "
                              "pip install 'flowcept[rabbitmq]'") from None
        params = pika.URLParameters(self.url)
        params.connection_attempts = 3
        params.retry_delay = 1
        params.socket_timeout = 5
        self._conn = pika.BlockingConnection(params)
        self._ch = self._conn.channel()
        if self.exchange_type:   # declare it ourselves only when asked (same type, or the broker refuses)
            self._ch.exchange_declare(self.exchange, exchange_type=self.exchange_type, durable=True)
        else:
            self._ch.exchange_declare(self.exchange, passive=True)   # must exist; never created here
        self._ch.queue_declare(self.queue, durable=True)
        self._ch.queue_bind(self.queue, self.exchange, routing_key=self.binding_key)
        self._ch.basic_qos(prefetch_count=1000)

    def close(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        finally:
            self._conn = self._ch = None

    def read_new(self) -> Iterator[Item]:
        if self._ch is None:
            self.open()
        import pika.exceptions
        n = 0
        try:
            while n < self.max_per_pass:
                method, props, body = self._ch.basic_get(self.queue, auto_ack=False)
                if method is None:
                    return
                item = self._item(method, props, body)
                item.on_emitted = self._acker(method.delivery_tag)
                yield item
                n += 1
        except pika.exceptions.AMQPError:
            # a broker restart or network cut: reconnect on the next pass; what was
            # not acknowledged is redelivered (same record ids)
            try:
                self.close()
            except Exception:
                self._conn = self._ch = None
            raise

    def _acker(self, tag):
        ch = self._ch

        def ack() -> None:   # the base class calls it once the record is in the ring
            ch.basic_ack(tag)
        return ack

    def _item(self, method, props, body: bytes) -> Item:
        headers = dict(props.headers or {})
        headers = {str(k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                   for k, v in headers.items()}
        digest = hashlib.sha256(body).hexdigest()
        msg_id = props.message_id or hashlib.blake2b(
            repr((method.routing_key, sorted(headers.items(), key=str), props.timestamp, digest)).encode(),
            digest_size=12).hexdigest()
        preview = body[: self.body_preview_bytes]
        try:
            text = preview.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        summary = {"size": len(body), "sha256": digest}
        if text is not None:
            summary["preview"] = text
            summary["truncated"] = len(body) > self.body_preview_bytes
        used = {"routing_key": method.routing_key, "exchange": method.exchange or self.exchange,
                "headers": headers, "body": summary}
        if props.content_type:
            used["content_type"] = props.content_type
        if props.message_id:
            used["message_id"] = props.message_id
        now = time.time_ns()
        when = int(props.timestamp) * 1_000_000_000 if props.timestamp else now
        meta = {"queue": self.queue, "redelivered": bool(method.redelivered), "observed_ns": now}
        return Item(source_id=f"{self.exchange}:{msg_id}", activity=f"rabbitmq:{self.exchange}",
                    start_ns=when, end_ns=when, used=used, custom_metadata=meta)
