"""``flowcept keeper replay``: the URL's scheme picks the transport, and a
spool file is deleted only once the hub the user named confirmed its batch.
Counted at the destination: a real redis-server and a real Kafka-protocol
broker (Tansu)."""
import os
import subprocess
import sys
import time
import uuid

import pytest

from flowcept.config import load_config
from flowcept.keeper import Keeper
from flowcept.node.spool import Spool
from support.framegen import frame_key, make_frame

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spool_with(tmp_path, n=3, records=10, nodes=("n1",)):
    """A job's spool dir with n batches of `records` records per node."""
    frames = []
    for i, node in enumerate(nodes):
        sp = Spool(str(tmp_path / "spool" / "job1" / node))
        for s in range(n):
            f = make_frame(s, records, ring_uid=10 + i, node=node)[0]
            sp.put(frame_key(f), f)
            frames.append(f)
    return str(tmp_path / "spool"), frames


def replay(*args, env=None):
    return subprocess.run([sys.executable, "-m", "flowcept", "keeper", "replay", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))


def left_in(spool_dir):
    return sum(f.endswith(".batch") for _, _, fs in os.walk(spool_dir) for f in fs)


@pytest.mark.redis
def test_replay_to_redis_url_lands_in_redis_and_a_keeper_stores_it(redis_server, tmp_path):
    spool, frames = spool_with(tmp_path, n=3, nodes=("n1", "n2"))
    # the configured transport is the embedded default: the URL must win
    r = replay("--spool-dir", spool, "--url", redis_server.url,
               env={"FLOWCEPT_TRANSPORT": "embedded"})
    assert r.returncode == 0, r.stderr
    assert "replayed 6 batches (60 records)" in r.stdout and "0 left" in r.stdout
    assert f"127.0.0.1:{redis_server.port}" in r.stdout and "confirmed" in r.stdout
    c = redis_server.client()
    entries = c.xrange("flowcept")
    assert len(entries) == 6                                  # counted at the destination
    assert sorted(bytes(f[b"key"]) for _, f in entries) == sorted(frame_key(f) for f in frames)
    assert left_in(spool) == 0
    assert not os.path.exists(os.path.join(spool, "store"))   # nothing went to a local store
    cfg = load_config(env={}, transport="redis", transport_url=redis_server.url,
                      store_dir=str(tmp_path / "store"))
    k = Keeper(cfg, name="k")
    k.run(max_idle_s=0.5)
    assert k.counts["batches_in"] == 6 and k.counts["records_in"] == 60


@pytest.mark.kafka
def test_replay_to_kafka_url_lands_in_the_topic(kafka_server, tmp_path):
    from confluent_kafka import Consumer
    spool, frames = spool_with(tmp_path, n=3)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    r = replay("--spool-dir", spool, "--url", kafka_server.url(topic), "-o", "kafka_partitions=2")
    assert r.returncode == 0, r.stderr
    assert "replayed 3 batches (30 records)" in r.stdout and left_in(spool) == 0
    c = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "count-" + topic,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 6000})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        got += [m for m in c.consume(10, 0.5) if m.error() is None]
    more = [m for m in c.consume(10, 1.0) if m.error() is None]
    c.close()
    assert sorted(m.key() for m in got + more) == sorted(frame_key(f) for f in frames)


def test_replay_without_a_destination_deletes_nothing(tmp_path):
    spool, _ = spool_with(tmp_path)
    r = replay("--spool-dir", spool, env={"FLOWCEPT_TRANSPORT": "embedded"})
    assert r.returncode != 0
    assert "--url" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert left_in(spool) == 3


def test_replay_to_a_transport_that_cannot_confirm_deletes_nothing(tmp_path):
    spool, _ = spool_with(tmp_path)
    r = replay("--spool-dir", spool, "--transport", "null")
    assert r.returncode == 1
    assert "3 left" in r.stdout and "does not count confirmed batches" in r.stderr
    assert left_in(spool) == 3


def test_replay_with_a_contradicting_transport_flag_is_refused(tmp_path):
    spool, _ = spool_with(tmp_path)
    r = replay("--spool-dir", spool, "--url", "redis://127.0.0.1:1/0", "--transport", "kafka")
    assert r.returncode != 0 and "does not speak redis://" in r.stderr
    assert left_in(spool) == 3


@pytest.mark.redis
def test_replay_to_a_refusing_redis_keeps_the_files(tmp_path):
    """XADD refused (maxmemory reached, noeviction): nothing confirmed, nothing deleted."""
    from support.redis_server import RedisServer
    spool, _ = spool_with(tmp_path, n=4, records=20000)     # ~1.7 MB per batch
    with RedisServer(tmp_path / "r", extra_args=["--maxmemory", "3mb",
                                                 "--maxmemory-policy", "noeviction"]) as srv:
        r = replay("--spool-dir", spool, "--url", srv.url)
        length = srv.client().xlen("flowcept")
    assert r.returncode != 0, r.stdout
    assert length < 4                       # Redis took some at most
    assert left_in(spool) == 4              # the group was not confirmed: every file kept


@pytest.mark.redis
def test_replay_to_an_unreachable_redis_keeps_the_files(tmp_path):
    from support.redis_server import free_port
    spool, _ = spool_with(tmp_path)
    r = replay("--spool-dir", spool, "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert r.returncode == 3 and "unreachable" in r.stderr
    assert left_in(spool) == 3
