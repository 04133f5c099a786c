"""route(job, n): a job's consecutive node names fill partitions and shards
evenly; the same (job, node) always goes to the same place; real Redis
shards and real Kafka partitions receive what route says."""
import collections
import uuid
import zlib

import pytest

from flowcept.config import load_config
from flowcept.record.job import JobInfo
from flowcept.transport import route


def job(node, name="12345"):
    return JobInfo(job_name=name, job_id=12345, node=node, run_dir="")


def test_consecutive_node_names_fill_every_destination():
    nodes = [f"nid{1000 + i:06d}" for i in range(4)]
    # the old crc32(node) % n put these on shard 0 of 2 and on partitions {2, 0, 2, 0}
    assert {zlib.crc32(n.encode()) % 2 for n in nodes} == {0}
    assert sorted(route(job(n), 4) for n in nodes) == [0, 1, 2, 3]
    assert sorted(collections.Counter(route(job(n), 2) for n in nodes).values()) == [2, 2]
    big = [f"nid{i:06d}" for i in range(5000, 5064)]
    assert set(collections.Counter(route(job(n), 8) for n in big).values()) == {8}
    # other numbering styles
    for fmt in ("node{}", "cn-{:04d}", "frontier{:05d}", "gpu{}.local"):
        names = [fmt.format(i) for i in range(7, 13)]
        if not fmt.endswith(".local"):
            assert sorted(route(job(n), 6) for n in names) == list(range(6)), fmt


def test_stable_and_job_dependent():
    assert route(job("nid001000"), 8) == route(job("nid001000"), 8)
    assert route(job("login-a"), 5) == route(job("login-a"), 5)
    # many one-node jobs on the same node do not all land on one partition
    spread = {route(job("nid001000", name=str(j)), 8) for j in range(64)}
    assert len(spread) >= 6
    assert route(job("anything"), 1) == 0
    # names without a trailing number: a hash of (job, node), in range
    assert all(0 <= route(job(f"host-{c}"), 3) < 3 for c in "abcdefgh")
    # a very long trailing number is fine
    assert 0 <= route(job("n" + "9" * 60), 7) < 7


@pytest.mark.redis
def test_two_redis_shards_each_get_two_of_four_nodes(tmp_path):
    from support.redis_server import RedisServer
    from flowcept.transport.redis import RedisTransport
    from support.framegen import frame_key, make_frame
    with RedisServer(tmp_path / "a") as a, RedisServer(tmp_path / "b") as b:
        cfg = load_config(env={}, transport="redis", transport_url=f"{a.url},{b.url}")
        for i in range(4):
            tr = RedisTransport(cfg, job(f"nid{1000 + i:06d}"))
            f = make_frame(0, 5, ring_uid=i + 1)[0]
            tr.publish(frame_key(f), f)
            tr.close()
        assert (a.client().xlen("flowcept"), b.client().xlen("flowcept")) == (2, 2)


@pytest.mark.redis
def test_one_redis_transport_routes_any_node_to_its_shard(tmp_path):
    """The bridge's way: one transport, publish(..., job=) per entry."""
    from support.redis_server import RedisServer
    from flowcept.transport.redis import RedisTransport, split_urls
    from support.framegen import frame_key, make_frame
    with RedisServer(tmp_path / "a") as a, RedisServer(tmp_path / "b") as b:
        cfg = load_config(env={}, transport="redis", transport_url=f"{a.url},{b.url}")
        tr = RedisTransport(cfg, job("bridge"))
        want = collections.Counter()
        urls = split_urls(cfg.transport_url)
        for i in range(300):
            j = job(f"nid{i:06d}")
            f = make_frame(0, 2, ring_uid=i + 1)[0]
            tr.publish(frame_key(f), f, job=j)
            want[urls[route(j, 2)]] += 1
        tr.flush()
        assert tr.delivered == 300 and len(tr._clients) == 2     # one connection per shard
        tr.close()
        got = a.client().xrange("flowcept", count=1)[0][1]
        assert got[b"node"].startswith(b"nid") and got[b"job"] == b"12345"
        assert (a.client().xlen("flowcept"), b.client().xlen("flowcept")) == (want[a.url], want[b.url])
        assert want[a.url] == want[b.url] == 150


@pytest.mark.kafka
def test_four_nodes_on_four_kafka_partitions(kafka_server, tmp_path):
    from confluent_kafka import Consumer, TopicPartition
    from flowcept.transport.kafka import KafkaTransport
    from support.framegen import frame_key, make_frame
    topic = f"t-{uuid.uuid4().hex[:8]}"
    cfg = load_config(env={}, transport="kafka", transport_url=kafka_server.url(topic),
                      kafka_partitions=4)
    parts = {}
    for i in range(4):
        node = f"nid{1000 + i:06d}"
        tr = KafkaTransport(cfg, job(node))
        f = make_frame(0, 5, ring_uid=i + 1)[0]
        tr.publish(frame_key(f), f)
        tr.flush()
        parts[node] = tr.partition
        tr.close()
    assert sorted(parts.values()) == [0, 1, 2, 3]
    c = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "peek-" + topic,
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    for node, p in parts.items():
        c.assign([TopicPartition(topic, p, 0)])
        msgs = []
        for _ in range(40):
            msgs += [m for m in c.consume(5, 0.25) if m.error() is None]
            if msgs:
                break
        assert msgs and dict(msgs[0].headers())["node"] == node.encode()
    c.close()
