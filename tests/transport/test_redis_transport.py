"""The Redis Streams transport against a real redis-server."""
import os

import pytest

from flowcept.config import ConfigError, load_config
from flowcept.transport import JobInfo, TransportUnavailable, open_transport
from flowcept.transport.redis import (FIELD_FRAME, FIELD_JOB, FIELD_KEY, FIELD_NODE, pick_url,
                                      redact, split_urls)
from support.framegen import frame_key, make_frame

JOB = JobInfo(job_name="j1", job_id=7, node="nodeA", run_dir="/nonexistent")


def cfg(url, **kw):
    return load_config(transport="redis", transport_url=url, **kw)


def test_url_helpers():
    assert split_urls("redis://a:1/0, rediss://:pw@b:2/1") == ["redis://a:1/0", "rediss://:pw@b:2/1"]
    assert split_urls("") == ["redis://127.0.0.1:6379/0"]
    with pytest.raises(ConfigError, match="not a Redis URL"):
        split_urls("http://x:1")
    assert redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:s3cret@h:6380/2") == "rediss://user:***@h:6380/2"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    urls = [f"redis://h{i}:1/0" for i in range(4)]
    # stable: the same node always picks the same instance; nodes spread over all
    def on(node):
        return JobInfo(job_name="j1", job_id=7, node=node, run_dir="")
    assert all(pick_url(urls, on("node17")) == pick_url(urls, on("node17")) for _ in range(3))
    # consecutive nodes fill the instances evenly (flowcept.transport.route)
    picks = [pick_url(urls, on(f"node{i}")) for i in range(64)]
    assert {u: picks.count(u) for u in urls} == {u: 16 for u in urls}


def test_rediss_url_uses_tls():
    import redis
    c = redis.Redis.from_url("rediss://:pw@127.0.0.1:1/0")
    assert c.connection_pool.connection_class is redis.SSLConnection


@pytest.mark.redis
def test_publish_is_pipelined_and_flush_confirms(redis_server):
    t = open_transport("redis", cfg(redis_server.url, redis_pipeline=8), JOB)
    frames = [make_frame(s, 20)[0] for s in range(20)]
    buf = bytearray(max(map(len, frames)))
    for f in frames[:5]:
        buf[:len(f)] = f
        t.publish(frame_key(f), memoryview(buf)[:len(f)])   # caller reuses its buffer
    assert redis_server.client().xlen("flowcept") == 0      # queued, not sent
    t.flush()
    assert t.round_trips == 1 and t.batches == 5
    for f in frames[5:]:
        t.publish(frame_key(f), f)      # 15 more: one automatic round trip at 8
    t.close()
    assert t.round_trips == 3 and t.batches == 20
    entries = redis_server.client().xrange("flowcept")
    assert len(entries) == 20
    for (eid, fields), f in zip(entries, frames):
        assert fields[FIELD_FRAME] == f and fields[FIELD_KEY] == frame_key(f)
        assert fields[FIELD_JOB] == b"j1" and fields[FIELD_NODE] == b"nodeA"


@pytest.mark.redis
def test_wrong_password_is_a_clear_error(tmp_path):
    from support.redis_server import RedisServer, redis_available
    if not redis_available()[0]:
        pytest.skip(redis_available()[1])
    with RedisServer(tmp_path / "r", password="right-one") as srv:
        with pytest.raises(TransportUnavailable) as ei:
            open_transport("redis", cfg(srv.url_with("wrong-one")), JOB)
        msg = str(ei.value)
        assert "authentication failed" in msg and f"127.0.0.1:{srv.port}" in msg
        assert "wrong-one" not in msg and "right-one" not in msg
        assert "transport_url" in msg and "FLOWCEPT_TRANSPORT_URL" in msg
        with pytest.raises(TransportUnavailable, match="authentication required"):
            open_transport("redis", cfg(f"redis://127.0.0.1:{srv.port}/0"), JOB)
        t = open_transport("redis", cfg(srv.url), JOB)    # the right one works
        f = make_frame(0, 3)[0]
        t.publish(frame_key(f), f)
        t.close()
        assert srv.client().xlen("flowcept") == 1


@pytest.mark.redis
def test_wrong_password_from_the_cli(tmp_path):
    import subprocess
    import sys
    from support.redis_server import RedisServer, redis_available
    if not redis_available()[0]:
        pytest.skip(redis_available()[1])
    with RedisServer(tmp_path / "r", password="pw1") as srv:
        r = subprocess.run([sys.executable, "-m", "flowcept", "keeper", "run", "--url",
                            srv.url_with("nope"), "--store-dir", str(tmp_path / "store")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 3
        assert "authentication failed" in r.stderr and "nope" not in r.stderr
        assert f"redis://:***@127.0.0.1:{srv.port}/0" in r.stderr


def test_unreachable_is_transport_unavailable():
    from support.redis_server import free_port
    port = free_port()
    with pytest.raises(TransportUnavailable, match=f"127.0.0.1:{port}.*unreachable"):
        open_transport("redis", cfg(f"redis://:pw@127.0.0.1:{port}/0"), JOB)


@pytest.mark.redis
def test_failed_flush_hands_back_unflushed_frames(redis_server):
    t = open_transport("redis", cfg(redis_server.url, spool_retry_ms=60_000), JOB)
    frames = [make_frame(s, 5)[0] for s in range(3)]
    for f in frames:
        t.publish(frame_key(f), f)
    redis_server.kill()
    with pytest.raises(TransportUnavailable, match="unreachable"):
        t.flush()
    # down: publish refuses at once (no reconnect per batch) until the retry time
    with pytest.raises(TransportUnavailable):
        t.publish(b"k" * 24, frames[0])
    back = t.take_unflushed()
    assert [k for k, _ in back] == [frame_key(f) for f in frames]
    assert [f for _, f in back] == frames
    assert t.take_unflushed() == []


@pytest.mark.redis
def test_nodes_shard_over_instances(tmp_path):
    from support.redis_server import RedisServer
    with RedisServer(tmp_path / "a") as a, RedisServer(tmp_path / "b") as b:
        url = f"{a.url},{b.url}"
        seen = {}
        for i in range(16):
            job = JobInfo(job_name="j", job_id=1, node=f"node{i}", run_dir="/x")
            t = open_transport("redis", cfg(url), job)
            f = make_frame(i, 2, ring_uid=i)[0]
            t.publish(frame_key(f), f)
            t.close()
            seen.setdefault(t.url, 0)
            seen[t.url] += 1
        assert a.client().xlen("flowcept") == seen.get(a.url, 0) > 0
        assert b.client().xlen("flowcept") == seen.get(b.url, 0) > 0
