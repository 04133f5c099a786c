"""The Kafka transport and keeper source against a real Kafka-protocol broker
(Tansu): delivery reports, partitioning by node, offsets committed after
the store commit, keepers sharing a topic, a keeper SIGKILLed mid-ingest."""
import signal
import subprocess
import sys
import time
import uuid

import pytest

from flowcept.config import ConfigError, load_config
from flowcept.errors import TransportUnavailable
from flowcept.keeper import Keeper, read_status
from flowcept.record.job import JobInfo
from flowcept.store import open_store
from flowcept.transport import route
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.kafka


def kcfg(srv, tmp_path, topic=None, **kw):
    topic = topic or f"t-{uuid.uuid4().hex[:8]}"
    kw.setdefault("kafka_group", f"g-{uuid.uuid4().hex[:8]}")   # a new group per test
    return load_config(env={}, transport="kafka", transport_url=srv.url(topic),
                       store_dir=str(tmp_path / "store"), **kw)


def job(node="n0", name="j"):
    return JobInfo(job_name=name, job_id=7, node=node, run_dir="")


def publish(cfg, frames, node="n0"):
    from flowcept.transport.kafka import KafkaTransport
    tr = KafkaTransport(cfg, job(node))
    for f in frames:
        tr.publish(frame_key(f), f)
    tr.flush()
    n, part = tr.batches, tr.partition
    tr.close()
    return n, part


def stored_keys(path):
    with open_store("lmdb", path, readonly=True) as st:
        return [k for k, _ in st.scan()]


def test_delivery_partitioning_and_offsets_after_commit(kafka_server, tmp_path):
    from confluent_kafka import Consumer, TopicPartition
    cfg = kcfg(kafka_server, tmp_path, kafka_partitions=4)
    a = [make_frame(s, 40, ring_uid=1)[0] for s in range(10)]
    b = [make_frame(s, 40, ring_uid=2, node="n1")[0] for s in range(10)]
    n_a, part_a = publish(cfg, a, "node-a")
    n_b, part_b = publish(cfg, b + [b[0]], "node-b")          # b[0] twice: a redelivery
    assert (n_a, n_b) == (10, 11)                               # every delivery report seen
    assert part_a == route(job("node-a"), 4) and part_b == route(job("node-b"), 4)
    # a node's batches are in its partition, in publish order, keyed by batch id
    c = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "peek-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    topic = cfg.transport_url.rsplit("/", 1)[1]
    c.assign([TopicPartition(topic, part_a, 0)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10 and time.monotonic() < deadline:
        got += [m for m in c.consume(10, 0.5) if m.error() is None and m.partition() == part_a]
    c.close()
    if part_a != part_b:
        assert [m.key() for m in got] == [frame_key(f) for f in a]
    assert dict(got[0].headers())["node"] == b"node-a"
    k = Keeper(cfg, name="k1")
    k.run(max_idle_s=7)   # a group join takes a few seconds
    assert k.counts["batches_in"] == 20 and k.counts["records_in"] == 800
    assert k.counts["duplicates"] == 1 and k.counts["acked"] == 21
    assert len(stored_keys(str(tmp_path / "store"))) == 20
    st = read_status(str(tmp_path / "store"), cfg)
    (src,) = st["sources"]
    # every offset committed after the store commit (the sum of the next offsets)
    assert src["committed"] == 21 and src["groups"][0]["lag"] == 0


def test_errors_name_the_fix(kafka_server, tmp_path):
    from flowcept.transport.kafka import KafkaTransport, parse_url
    with pytest.raises(ConfigError, match="kafka://host:port"):
        parse_url("redis://x:1/0")
    assert parse_url("kafka://a:1,b/top") == ("a:1,b:9092", "top")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(env={}, kafka_client="no-equals-sign")
    from support.kafka_server import free_port
    cfg = load_config(env={}, transport="kafka", transport_url=f"kafka://127.0.0.1:{free_port()}/t")
    t0 = time.monotonic()
    with pytest.raises(TransportUnavailable, match="unreachable.*start the broker"):
        KafkaTransport(cfg, job())
    assert time.monotonic() - t0 < 10


def test_two_keepers_share_the_partitions_and_store_each_batch_once(kafka_server, tmp_path):
    cfg = kcfg(kafka_server, tmp_path, kafka_partitions=4)
    nodes = ["a", "b", "c", "d", "e", "f"]
    frames = {n: [make_frame(s, 30, ring_uid=i + 1)[0] for s in range(8)] for i, n in enumerate(nodes)}
    for n in nodes:
        publish(cfg, frames[n], n)
    store = str(tmp_path / "store")
    # two keeper processes (as deployed), one store: LMDB takes several writers
    procs = [subprocess.Popen(
        [sys.executable, "-m", "flowcept", "keeper", "run", "--url", cfg.transport_url,
         "--store-dir", store, "--name", f"k{i}", "-o", f"kafka_group={cfg.kafka_group}",
         "--count", "2", "--exit-when-idle", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    keys = stored_keys(store)
    want = {frame_key(f) for fs in frames.values() for f in fs}
    assert sorted(keys) == sorted(want)                     # all of them, each once
    st = read_status(store)
    assert st["totals"]["batches_in"] == len(want)
    per = {k["name"]: k["batches_in"] for k in st["keepers"]}
    assert set(per) == {"k0", "k1"}
    if len({route(job(n), 4) for n in nodes}) > 1:
        # both took part: the group split the partitions between them
        assert all(k["acked"] > 0 for k in st["keepers"]), st["keepers"]


def _keeper_proc(cfg, store, name):
    return subprocess.Popen(
        [sys.executable, "-m", "flowcept", "keeper", "run", "--url", cfg.transport_url,
         "--store-dir", store, "--name", name, "--count", "4", "-o",
         f"kafka_group={cfg.kafka_group}", "--status-interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_keeper_sigkilled_mid_ingest_and_restarted_stores_everything_once(kafka_server, tmp_path):
    cfg = kcfg(kafka_server, tmp_path, kafka_partitions=2)
    frames = [make_frame(s, 400)[0] for s in range(150)]
    publish(cfg, frames, "n0")
    store = str(tmp_path / "store")
    k = _keeper_proc(cfg, store, "k-crash")
    try:
        deadline = time.monotonic() + 45
        got = 0
        while time.monotonic() < deadline:
            try:
                got = read_status(store)["totals"]["records_in"]
            except Exception:
                got = 0
            if got > 0:
                break
            time.sleep(0.05)
        assert 0 < got < 150 * 400, got        # really mid-ingest
        k.send_signal(signal.SIGKILL)
        k.wait(30)
    finally:
        if k.poll() is None:
            k.kill()
            k.wait(30)
    partial = len(stored_keys(store))
    assert 0 < partial < 150
    k2 = subprocess.Popen(
        [sys.executable, "-m", "flowcept", "keeper", "run", "--url", cfg.transport_url,
         "--store-dir", store, "--name", "k-crash", "-o", f"kafka_group={cfg.kafka_group}",
         "--exit-when-idle", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the dead member holds its partitions until kafka_session_timeout_ms (6 s)
    out, err = k2.communicate(timeout=90)
    assert k2.returncode == 0, err
    keys = stored_keys(store)
    assert sorted(keys) == sorted(frame_key(f) for f in frames)       # nothing lost, none twice
    from flowcept.query.search import query
    tasks = query(store)
    assert len(tasks) == 150 * 400 == len({t["task_id"] for t in tasks})


@pytest.mark.slow
def test_rebalance_while_keepers_come_and_go_loses_and_doubles_nothing(kafka_server, tmp_path):
    cfg = kcfg(kafka_server, tmp_path, kafka_partitions=4)
    nodes = ["a", "b", "c", "d", "e", "f", "g", "h"]
    want = []
    for i, n in enumerate(nodes):
        # enough that the first keeper cannot take everything before the others join
        fs = [make_frame(s, 300, ring_uid=i + 1)[0] for s in range(60)]
        publish(cfg, fs, n)
        want += [frame_key(f) for f in fs]
    store = str(tmp_path / "store")

    def keeper(name, idle=None):
        args = [sys.executable, "-m", "flowcept", "keeper", "run", "--url", cfg.transport_url,
                "--store-dir", store, "--name", name, "--count", "1", "-o",
                f"kafka_group={cfg.kafka_group}", "--status-interval", "0.1"]
        if idle:
            args += ["--exit-when-idle", str(idle)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stored_now():
        try:
            return read_status(store)["totals"]["batches_in"]
        except Exception:
            return 0

    a = keeper("k-a")
    b = c = None
    try:
        deadline = time.monotonic() + 45
        while stored_now() < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        b = keeper("k-b")                       # joins: the partitions are split again
        while stored_now() < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_now() < len(want), "ingest ended before the second rebalance"
        a.send_signal(signal.SIGTERM)           # leaves: its partitions move to k-b
        a.communicate(timeout=30)
        assert a.returncode == 0
        c = keeper("k-c", idle=10)              # and a third one comes and stays to the end
        c.communicate(timeout=90)
        b.send_signal(signal.SIGTERM)
        b.communicate(timeout=30)
    finally:
        for p in (a, b, c):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
    keys = stored_keys(store)
    assert sorted(keys) == sorted(want)          # nothing lost, nothing twice
    st = read_status(store)
    assert st["totals"]["batches_in"] == len(want)
    per = {k["name"]: k["batches_in"] for k in st["keepers"]}
    assert set(per) == {"k-a", "k-b", "k-c"}
    assert per["k-a"] >= 10 and per["k-b"] + per["k-c"] > 0, per


def test_kafka_partitions_of_an_existing_topic_is_checked(kafka_server, tmp_path, caplog):
    """Whoever connects first creates the topic: a keeper whose explicit
    kafka_partitions differs fails with the fix; a job's leader warns and goes on."""
    cfg = kcfg(kafka_server, tmp_path, kafka_partitions=2)
    publish(cfg, [make_frame(0, 5)[0]])                     # creates the topic: 2 partitions
    r = subprocess.run([sys.executable, "-m", "flowcept", "keeper", "run", "--url",
                        cfg.transport_url, "--store-dir", str(tmp_path / "k"), "-o",
                        "kafka_partitions=8", "--exit-when-idle", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "already has 2 partitions, not kafka_partitions=8" in line and "--partitions 8" in line
    # the leader: a warning, and its batches still go
    import logging
    from flowcept.transport.kafka import KafkaTransport
    with caplog.at_level(logging.WARNING, logger="flowcept.transport.kafka"):
        tr = KafkaTransport(cfg.replace(kafka_partitions=8), job("n1"))
        f = make_frame(1, 5)[0]
        tr.publish(frame_key(f), f)
        tr.flush()
        assert tr.delivered == 1 and tr.partitions == 2
        tr.close()
    assert any("already has 2 partitions" in m for m in caplog.messages)
    # the default (not set anywhere) is not a mismatch
    from flowcept.transport.kafka import partitions_mismatch
    assert partitions_mismatch(load_config(env={}), "t", 2) is None
