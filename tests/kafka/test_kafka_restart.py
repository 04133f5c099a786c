"""A Kafka broker restart with unread records: Tansu on its s3:// storage
engine (a local moto S3 server keeps the log and the group offsets), so the
batches confirmed but not yet read before the restart are read after it,
each stored once, and the committed ones are not read again."""
import time
import uuid

import pytest

from flowcept.config import load_config
from flowcept.keeper import Keeper
from flowcept.record.job import JobInfo
from flowcept.store import open_store
from flowcept.transport.kafka import KafkaTransport
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.kafka


@pytest.fixture
def persistent_kafka(tmp_path):
    from support.kafka_server import KafkaServer, S3Server, kafka_available, s3_available
    for ok, why in (kafka_available(), s3_available()):
        if not ok:
            pytest.skip(why)
    with S3Server(tmp_path / "s3") as s3:
        srv = KafkaServer(tmp_path / "kafka", s3=s3)
        try:
            yield srv
        finally:
            srv.stop()


def publish(cfg, frames_by_node):
    for node, frames in frames_by_node.items():
        tr = KafkaTransport(cfg, JobInfo("job1", 7, node, ""))
        for f in frames:
            tr.publish(frame_key(f), f)
        tr.flush()
        assert tr.delivered == len(frames)
        tr.close()


def test_unread_batches_survive_a_broker_restart(persistent_kafka, tmp_path):
    srv = persistent_kafka
    topic = f"t-{uuid.uuid4().hex[:8]}"
    cfg = load_config(env={}, transport="kafka", transport_url=srv.url(topic), kafka_partitions=4,
                      kafka_group=f"g-{uuid.uuid4().hex[:8]}", store_dir=str(tmp_path / "store"))
    nodes = [f"nid{1000 + i:06d}" for i in range(4)]
    first = {n: [make_frame(s, 20, ring_uid=i + 1, node=n)[0] for s in range(5)]
             for i, n in enumerate(nodes)}
    second = {n: [make_frame(s, 20, ring_uid=i + 1, node=n)[0] for s in range(5, 10)]
              for i, n in enumerate(nodes)}
    publish(cfg, first)
    k1 = Keeper(cfg, name="k")
    k1.run(max_idle_s=6)          # reads and commits the first phase
    assert k1.counts["batches_in"] == 20
    publish(cfg, second)          # confirmed by the broker, read by nobody yet
    srv.stop()
    time.sleep(0.5)
    srv.start()
    k2 = Keeper(cfg, name="k")
    k2.run(max_idle_s=8)
    # after the restart: exactly the unread phase, nothing of the committed one again
    assert k2.counts["batches_in"] == 20 and k2.counts["duplicates"] == 0, k2.counts
    with open_store("lmdb", str(tmp_path / "store"), readonly=True) as st:
        keys = [k for k, _ in st.scan()]
    want = [frame_key(f) for fs in (first, second) for frames in fs.values() for f in frames]
    assert sorted(keys) == sorted(want) and len(keys) == 40
