"""The bridge with many nodes behind it: one destination transport routes
every (job, node) (no per-node producers to thrash), each batch lands on its
node's shard, and the source forgets an entry only once the destination
counted it as confirmed.  Real redis-servers."""
import collections
import threading
import time

import pytest

from flowcept import registry
from flowcept.config import load_config
from flowcept.keeper.bridge import Bridge
from flowcept.record.job import JobInfo
from flowcept.transport import Transport, route
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.redis


def fill(client, n_nodes):
    pipe = client.pipeline(transaction=False)
    for i in range(n_nodes):
        f = make_frame(0, 3, ring_uid=i + 1, payloads=False)[0]
        pipe.xadd("flowcept", {b"f": f, b"key": frame_key(f), b"job": b"j1",
                               b"node": f"nid{i:06d}".encode()})
    pipe.execute()


def test_three_hundred_nodes_through_one_transport_to_their_shards(tmp_path):
    from support.redis_server import RedisServer
    with RedisServer(tmp_path / "src") as src, RedisServer(tmp_path / "a") as a, \
            RedisServer(tmp_path / "b") as b:
        fill(src.client(), 300)
        bridge = Bridge(load_config(env={}), src.url, f"{a.url},{b.url}", name="br", count=64)
        seen = []
        real = bridge._transport
        bridge._transport = lambda job: seen.append(real(job)) or seen[-1]
        bridge.run(max_idle_s=0.5)
        assert len({id(t) for t in seen}) == 1           # one transport for 300 nodes
        assert bridge.counts["batches"] == 300 and src.client().xlen("flowcept") == 0
        want = collections.Counter(route(JobInfo("j1", 0, f"nid{i:06d}", ""), 2)
                                   for i in range(300))
        assert (a.client().xlen("flowcept"), b.client().xlen("flowcept")) == (want[0], want[1])
        for shard, srv in enumerate((a, b)):             # each batch on its node's shard
            for _, fields in srv.client().xrange("flowcept"):
                node = fields[b"node"].decode()
                assert route(JobInfo("j1", 0, node, ""), 2) == shard


class Uncounted(Transport):
    """A destination that takes batches and cannot say they arrived."""
    name = "uncounted"
    url_schemes = ("uncounted",)

    def publish(self, key, frame):
        pass


@pytest.fixture
def uncounted():
    registry.register("transport", "uncounted", Uncounted)
    yield
    registry._loaded.pop(("transport", "uncounted"), None)    # no leftover for other tests


def test_a_destination_that_does_not_count_gets_nothing_deleted_at_the_source(tmp_path, uncounted):
    from support.redis_server import RedisServer
    with RedisServer(tmp_path / "src") as src:
        fill(src.client(), 5)
        bridge = Bridge(load_config(env={}), src.url, "uncounted://anywhere", name="bu")
        th = threading.Thread(target=bridge.run)       # it retries for ever: stopped below
        th.start()
        deadline = time.monotonic() + 30
        while bridge.counts["dest_errors"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        bridge.stop()
        th.join()
        assert bridge.counts["batches"] == 0 and bridge.counts["dest_errors"] >= 2
        assert src.client().xlen("flowcept") == 5         # still there, pending
