"""Federated hubs: two site Redis hubs bridged into one central Kafka hub,
keepers on the Kafka side; a bridge SIGKILLed mid-run and restarted under
its name: nothing lost, nothing stored twice."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from flowcept.config import load_config
from flowcept.keeper import read_status
from flowcept.record.job import JobInfo
from flowcept.store import open_store
from support.framegen import frame_key, make_frame

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
def servers(tmp_path):
    from support.kafka_server import KafkaServer, kafka_available
    from support.redis_server import RedisServer, redis_available
    for ok, why in (kafka_available(), redis_available()):
        if not ok:
            pytest.skip(why)
    hubs = [RedisServer(tmp_path / f"redis{i}") for i in range(2)]
    central = KafkaServer(tmp_path / "kafka")
    try:
        yield hubs, central
    finally:
        central.stop()
        for h in hubs:
            h.stop()


def publish_site(url, node, ring_uid, n, per):
    """A site's leader: frames through the Redis transport (as a job would)."""
    from flowcept.transport.redis import RedisTransport
    cfg = load_config(env={}, transport="redis", transport_url=url)
    tr = RedisTransport(cfg, JobInfo(f"job-{node}", 7, node, ""))
    keys = []
    for s in range(n):
        f = make_frame(s, per, ring_uid=ring_uid, node=node)[0]
        tr.publish(frame_key(f), f)
        keys.append(frame_key(f))
    tr.close()
    return keys


def bridge(src, dst, name, idle=None, count=8):
    args = [sys.executable, "-m", "flowcept", "bridge", "--from", src, "--to", dst, "--name", name,
            "--count", str(count)]
    if idle:
        args += ["--exit-when-idle", str(idle)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored_keys(path):
    with open_store("lmdb", path, readonly=True) as st:
        return [k for k, _ in st.scan()]


def test_two_redis_hubs_bridged_into_kafka_with_a_bridge_killed(servers, tmp_path):
    hubs, central = servers
    dst = central.url(f"central-{uuid.uuid4().hex[:6]}")
    group = f"g-{uuid.uuid4().hex[:6]}"
    want = []
    want += publish_site(hubs[0].url, "edge-a", 1, 300, 100)
    want += publish_site(hubs[1].url, "edge-b", 2, 40, 100)
    # site A's bridge: killed mid-run, then restarted under its name
    # one entry per read: each waits for its delivery report, so the kill lands mid-run
    b1 = bridge(hubs[0].url, dst, "bridge-a", count=1)
    b2 = bridge(hubs[1].url, dst, "bridge-b", idle=6)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and hubs[0].client().xlen("flowcept") > 270:
            time.sleep(0.005)
        left = hubs[0].client().xlen("flowcept")
        assert 0 < left < 300, left                       # really mid-run
        b1.send_signal(signal.SIGKILL)
        b1.wait(30)
        pending = hubs[0].client().xpending("flowcept", "flowcept-keepers")["pending"]
        b1 = bridge(hubs[0].url, dst, "bridge-a", idle=6)
        out1, err1 = b1.communicate(timeout=90)
        out2, err2 = b2.communicate(timeout=90)
    finally:
        for b in (b1, b2):
            if b.poll() is None:
                b.kill()
                b.wait(30)
    assert b1.returncode == 0 and b2.returncode == 0, err1 + err2
    assert hubs[0].client().xlen("flowcept") == 0 and hubs[1].client().xlen("flowcept") == 0
    store = str(tmp_path / "store")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "flowcept", "keeper", "run", "--url", dst, "--store-dir", store,
         "--name", f"k{i}", "-o", f"kafka_group={group}", "--exit-when-idle", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    keys = stored_keys(store)
    assert sorted(keys) == sorted(want)                   # nothing lost, nothing twice
    st = read_status(store)
    assert st["totals"]["records_in"] == 340 * 100
    # a batch the killed bridge had forwarded but not acknowledged went again:
    # the keepers skipped it (or the kill fell between two reads)
    assert st["totals"]["duplicates"] <= pending + 4
    from flowcept.query.search import query
    tasks = query(store, filter={"hostname": "edge-b"})
    assert len(tasks) == 40 * 100
