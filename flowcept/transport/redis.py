"""Redis Streams transport (leader side) and stream source (keeper side).

Leader: each batch frame is one stream entry, ``XADD <redis_stream> * f
<frame> key <24-byte batch key> job <job name> node <node>``.  ``publish``
only queues (the frame is copied: the caller reuses its buffer);
``flush`` sends everything queued in one pipeline (several frames per round
trip, at most ``redis_pipeline`` before publish sends on its own) and
returns when Redis has answered every XADD.  A failure raises
TransportUnavailable; the queued frames stay available through
``take_unflushed()`` so the leader spools them (see flowcept.node.drain).

Keeper: ``RedisSource`` reads with a consumer group (XREADGROUP), so
several keepers split one stream; entries are acknowledged (XACK, then
XDEL) only after the keeper committed them to LMDB.  A keeper restarted
under its old name first re-reads its own pending entries; entries of a
keeper that died for good are taken over with XAUTOCLAIM after
``keeper_claim_idle_ms``.

URLs: ``redis://[:password@]host[:port][/db]`` or ``rediss://`` (TLS), in
``transport_url``.  A comma-separated list shards the leaders over several
Redis instances: a job's node picks ``urls[route(job, len(urls))]``
(consecutive node names spread evenly; stable over runs; see
flowcept.transport); a keeper reads them all.  Passwords never appear in messages.
"""
from __future__ import annotations

import logging
import time
import urllib.parse
from typing import List, Optional, Tuple

from flowcept.config import Option
from flowcept.errors import ConfigError
from flowcept.osutil import redact_url as redact
from flowcept.transport import Entry as _Entry
from flowcept.transport import RouteCache, Source, Transport, TransportUnavailable, route

log = logging.getLogger("flowcept.transport.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
FIELD_FRAME = b"f"
FIELD_KEY = b"key"
FIELD_JOB = b"job"
FIELD_NODE = b"node"


def _nonempty(v: str):
    return None if v.strip() else "must not be empty, e.g. 'flowcept-keepers'"


OPTIONS = (
    Option("stream", str, "flowcept", "the stream every leader appends to"),
    Option("maxlen", int, 0, "approximate stream length cap (0 = unbounded)", range=(0, 1 << 40)),
    Option("group", str, "flowcept-keepers", "consumer group of the keepers", check=_nonempty),
    Option("pipeline", int, 64, "frames per round trip at most", range=(1, 1 << 16)),
    Option("delete_acked", bool, True, "keeper: XDEL entries after XACK (false keeps them in the "
           "stream)"),
)


# -- URLs ---------------------------------------------------------------
def split_urls(text: str) -> List[str]:
    """The URLs of a transport_url (comma-separated); validated."""
    urls = [u.strip() for u in (text or DEFAULT_URL).split(",") if u.strip()]
    if not urls:
        urls = [DEFAULT_URL]
    for u in urls:
        scheme = urllib.parse.urlsplit(u).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"transport_url {redact(u)!r}: not a Redis URL; use redis://[:password@]host:port/db "
                "or rediss://... for TLS (several: comma-separated)")
    return urls


def pick_url(urls: List[str], job) -> str:
    """The Redis instance of a job's node (see flowcept.transport.route)."""
    return urls[route(job, len(urls))]


def _import_redis():
    try:
        import redis
    except ImportError:
        raise TransportUnavailable("the redis transport needs the redis client: "
                                   "pip install 'flowcept[redis]' (or pip install redis)") from None
    return redis


def describe_error(url: str, err: BaseException) -> str:
    """A message for a failed connection: URL without password, cause, fix."""
    redis = _import_redis()
    where = f"Redis at {redact(url)}"
    text = str(err)
    low = text.lower()
    if isinstance(err, redis.AuthenticationError) or "wrongpass" in low or "noauth" in low \
            or "invalid password" in low or "invalid username-password" in low \
            or "authentication required" in low:
        if "without any password" in low or "no password is set" in low:
            return (f"{where}: the URL gives a password but the server has none; remove it from "
                    "transport_url (FLOWCEPT_TRANSPORT_URL)")
        try:
            has_password = urllib.parse.urlsplit(url).password is not None
        except ValueError:
            has_password = True
        if not has_password or "noauth" in low:
            return (f"{where}: authentication required but transport_url has no password; "
                    "set transport_url=redis://:PASSWORD@host:port/0 (FLOWCEPT_TRANSPORT_URL)")
        return (f"{where}: authentication failed (wrong password or user: {text}); fix the "
                "password in transport_url, e.g. redis://:PASSWORD@host:port/0 "
                "(FLOWCEPT_TRANSPORT_URL)")
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return (f"{where} is unreachable ({text}); start redis-server there or fix transport_url "
                "(FLOWCEPT_TRANSPORT_URL)")
    return f"{where}: {type(err).__name__}: {text}"


def connect(url: str, timeout: float = 5.0, socket_timeout: float = 60.0):
    """A connected, authenticated client (PING answered), or TransportUnavailable."""
    redis = _import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout,
                                      socket_timeout=socket_timeout, retry=Retry(NoBackoff(), 0),
                                      socket_read_size=1 << 20,
                                      retry_on_timeout=False)
        client.ping()
    except redis.RedisError as e:
        raise TransportUnavailable(describe_error(url, e)) from None
    except ValueError as e:    # malformed URL
        raise TransportUnavailable(f"bad Redis URL {redact(url)!r}: {e}") from None
    return client


# -- leader side ------------------------------------------------------------
class RedisTransport(Transport):
    name = "redis"
    url_schemes = ("redis", "rediss", "unix")
    spool_fallback = True        # the Drainer gives it the node's spool
    any_job = True               # one transport routes every (job, node): the bridge's

    def __init__(self, config, job):
        super().__init__(config, job)
        self.urls = split_urls(config.transport_url)
        self.url = pick_url(self.urls, job)
        self.stream = config.redis_stream
        self.maxlen = config.redis_maxlen or None
        self.depth = max(1, config.redis_pipeline)
        self._route = RouteCache(self._routing)     # (job, node) -> (url, routing fields)
        # (url, key, frame, routing fields) published, not yet confirmed
        self._pending: List[Tuple[str, bytes, bytes, dict]] = []
        self._retry_s = config.spool_retry_ms / 1000
        self._down_until = 0.0
        self._down_reason = ""
        self.batches = 0
        self.bytes = 0
        self.round_trips = 0
        self._clients = {self.url: connect(self.url)}    # rule 1: connect now or say why not

    @property
    def delivered(self) -> int:
        return self.batches

    def destination(self) -> str:
        return f"{','.join(redact(u) for u in self.urls)} stream {self.stream!r}"

    def _routing(self, job) -> Tuple[str, dict]:
        return (pick_url(self.urls, job),
                {FIELD_JOB: job.job_name.encode("utf-8", "surrogateescape"),
                 FIELD_NODE: job.node.encode("utf-8", "surrogateescape")})

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise TransportUnavailable(self._down_reason)

    def _mark_down(self, reason: str) -> None:
        self._down_reason = reason
        self._down_until = time.monotonic() + self._retry_s
        log.warning("flowcept: %s; batches go to the spool, retry in %.1f s", reason, self._retry_s)

    def publish(self, key, frame, job=None) -> None:
        self._check_up()
        url, routing = self._route(job or self.job)
        self._pending.append((url, bytes(key), bytes(frame), routing))
        if len(self._pending) >= self.depth:
            self.flush()

    def _client(self, url: str):
        c = self._clients.get(url)
        if c is None:
            c = self._clients[url] = connect(url)
        return c

    def flush(self) -> None:
        """One pipeline per Redis instance; what an instance confirmed leaves
        the pending list even when another instance fails."""
        if not self._pending:
            return
        self._check_up()
        for url in list(dict.fromkeys(u for u, _, _, _ in self._pending)):
            self._flush_one(url)
        self._down_until = 0.0

    def _flush_one(self, url: str) -> None:
        redis = _import_redis()
        mine = [p for p in self._pending if p[0] == url]
        try:
            pipe = self._client(url).pipeline(transaction=False)
            for _, key, frame, routing in mine:
                fields = {FIELD_FRAME: frame, FIELD_KEY: key, **routing}
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            replies = pipe.execute(raise_on_error=False)
        except TransportUnavailable as e:
            self._mark_down(str(e))
            raise
        except redis.RedisError as e:
            msg = describe_error(url, e)
            self._mark_down(msg)
            raise TransportUnavailable(msg) from None
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:   # e.g. OOM (maxmemory), NOPERM: nothing is confirmed
            msg = f"Redis at {redact(url)} refused XADD: {errors[0]}"
            self._mark_down(msg)
            raise TransportUnavailable(msg)
        self.round_trips += 1
        self.batches += len(mine)
        self.bytes += sum(len(p[2]) for p in mine)
        self._pending = [p for p in self._pending if p[0] != url]

    def take_unflushed(self) -> List[Tuple[bytes, bytes]]:
        """The batches published but not confirmed (after a failed flush)."""
        out, self._pending = [(k, f) for _, k, f, _ in self._pending], []
        return out

    def close(self) -> None:
        if not self._clients:
            return
        try:
            self.flush()
        finally:
            clients, self._clients = self._clients, {}
            for c in clients.values():
                try:
                    c.close()
                except Exception:
                    pass


BACKEND = RedisTransport


# -- keeper side -----------------------------------------------------------
def _entry(eid, fields, source: str) -> _Entry:
    """One delivered stream entry."""
    return _Entry(fields.get(FIELD_FRAME), fields.get(FIELD_KEY), fields.get(FIELD_JOB),
                  fields.get(FIELD_NODE), source, eid)


class RedisSource(Source):
    """A keeper's view of one Redis instance's stream (consumer group member)."""

    @classmethod
    def open_all(cls, config, consumer: str) -> List["RedisSource"]:
        """One source per URL of transport_url (a keeper reads every shard)."""
        return [cls(u, config.redis_stream, config.redis_group, consumer,
                    claim_idle_ms=config.keeper_claim_idle_ms,
                    delete_acked=config.redis_delete_acked)
                for u in split_urls(config.transport_url)]

    def __init__(self, url: str, stream: str, group: str, consumer: str,
                 claim_idle_ms: int = 30_000, delete_acked: bool = True):
        self.config = None
        self.url = url
        self.name = redact(url)
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.delete_acked = delete_acked
        self.client = None
        self._own_pending = True      # first read our own pending entries (restart)
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self.claimed = 0
        self._connect()

    def _connect(self) -> None:
        redis = _import_redis()
        self.client = connect(self.url)
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise TransportUnavailable(describe_error(self.url, e)) from None
        self._own_pending = True

    def _entries(self, reply) -> List[_Entry]:
        out = []
        for _stream, items in reply or []:
            for eid, fields in items:
                if fields is None:      # deleted while pending
                    continue
                out.append(_entry(eid, fields, self.name))
        return out

    def read(self, count: int, block_ms: Optional[int]) -> List[_Entry]:
        """Up to count entries: own pending, then claimed, then new ones."""
        redis = _import_redis()
        try:
            if self.client is None:
                self._connect()
            if self._own_pending:
                got = self._entries(self.client.xreadgroup(
                    self.group, self.consumer, {self.stream: "0"}, count=count))
                if got:
                    return got
                self._own_pending = False
            if self.claim_idle_ms >= 0 and time.monotonic() >= self._next_claim:
                got = self._claim(count)
                if got:
                    return got
            return self._entries(self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count,
                block=block_ms if block_ms else None))
        except redis.ResponseError as e:
            if "NOGROUP" in str(e):      # stream or group deleted (e.g. FLUSHALL): recreate
                self.client = None
                return []
            raise TransportUnavailable(describe_error(self.url, e)) from None
        except redis.RedisError as e:
            self.client = None
            raise TransportUnavailable(describe_error(self.url, e)) from None

    def _claim(self, count: int) -> List[_Entry]:
        reply = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                       self.claim_idle_ms, start_id=self._claim_cursor, count=count)
        cursor, items = reply[0], reply[1]
        self._claim_cursor = cursor
        if cursor in (b"0-0", "0-0"):
            # a full pass over the pending list: next pass after the idle time
            self._next_claim = time.monotonic() + max(self.claim_idle_ms, 100) / 1000 / 2
        out = [_entry(eid, fields, self.name) for eid, fields in items if fields is not None]
        self.claimed += len(out)
        return out

    def ack(self, entries: List[_Entry]) -> None:
        redis = _import_redis()
        ids = [e.id for e in entries]
        if not ids:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *ids)
            if self.delete_acked:
                pipe.xdel(self.stream, *ids)
            pipe.execute()
        except redis.RedisError as e:
            # Not acknowledged: redelivered later, and the store skips it.
            self.client = None
            raise TransportUnavailable(describe_error(self.url, e)) from None

    def redeliver(self, entries) -> None:
        """Not committed: read our own pending entries again (they stay pending)."""
        self._own_pending = True

    def info(self) -> dict:
        """Stream length, group pending/lag, consumers (XINFO).  Redis < 7
        reports no lag; with acknowledged entries deleted (the default) it
        is the stream's length less the group's pending entries."""
        out = stream_info(self.client, self.stream, self.group)
        if self.delete_acked:
            for g in out.get("groups", []):
                if g["name"] == self.group and "lag" not in g:
                    g["lag"] = max(0, out.get("length", 0) - g["pending"])
        return out

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None


def stream_info(client, stream: str, group: Optional[str] = None) -> dict:
    redis = _import_redis()
    out = {"stream": stream}
    try:
        out["length"] = int(client.xlen(stream))
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return {**out, "length": 0, "groups": []}
    gl = []
    for g in groups:
        name = g.get("name")
        name = name.decode() if isinstance(name, bytes) else name
        entry = {"name": name, "pending": int(g.get("pending", 0)),
                 "consumers": int(g.get("consumers", 0))}
        if g.get("lag") is not None:
            entry["lag"] = int(g["lag"])
        if group is None or name == group:
            try:
                entry["consumer_list"] = [
                    {"name": (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]),
                     "pending": int(c.get("pending", 0)), "idle_ms": int(c.get("idle", 0))}
                    for c in client.xinfo_consumers(stream, name)]
            except redis.ResponseError:
                pass
        gl.append(entry)
    out["groups"] = gl
    return out


SOURCE = RedisSource
