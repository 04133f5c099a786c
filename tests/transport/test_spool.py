"""The spool: durable files, key-order replay, removal only after flush,
and the Drainer's ring release only after flush or spool."""
import os
import stat

import pytest

from flowcept.native import lib
from flowcept.native.batch import Batch
from flowcept.config import load_config
from flowcept.node.drain import Drainer
from flowcept.native.ring import Ring
from flowcept.node.spool import Spool, replay_dir, spool_dir_for
from flowcept.transport import JobInfo, Transport, TransportUnavailable
from support.framegen import frame_key, make_frame


class Flaky(Transport):
    """A test transport: stores what was flushed; can be down; can fail after k publishes."""
    name = "flaky"
    spool_fallback = True

    def __init__(self, config, job):
        super().__init__(config, job)
        self.up = True
        self.fail_after = None     # publishes accepted before a flush failure
        self.pending = []
        self.stored = {}           # key -> frame (a dict: duplicates collapse, counted apart)
        self.deliveries = 0
        self.delivered = 0
        self.flushes = 0

    def publish(self, key, frame):
        if not self.up:
            raise TransportUnavailable("down")
        self.pending.append((bytes(key), bytes(frame)))

    def flush(self):
        if not self.pending:
            return
        if not self.up or (self.fail_after is not None and len(self.pending) > self.fail_after):
            raise TransportUnavailable("flush failed")
        for k, f in self.pending:
            self.stored[k] = f
            self.deliveries += 1
        self.delivered = self.deliveries
        self.pending = []
        self.flushes += 1

    def take_unflushed(self):
        out, self.pending = self.pending, []
        return out


def job(tmp_path):
    return JobInfo(job_name="job1", job_id=5, node="n1", run_dir=str(tmp_path / "run" / "job1"))


def test_put_is_private_durable_and_key_ordered(tmp_path):
    sp = Spool(str(tmp_path / "sp" / "n1"))
    frames = [make_frame(s, 4)[0] for s in (5, 1, 3)]
    for f in frames:
        sp.put(frame_key(f), f)
    assert stat.S_IMODE(os.stat(sp.dir).st_mode) == 0o700
    for name in os.listdir(sp.dir):
        assert stat.S_IMODE(os.stat(os.path.join(sp.dir, name)).st_mode) == 0o600
        assert name.endswith(".batch") and ".tmp" not in name
    assert sp.keys() == sorted(frame_key(f) for f in frames)
    assert sp.read(frame_key(frames[0])) == frames[0]
    sp.put(frame_key(frames[0]), frames[0])    # again: same file, no duplicate
    assert len(sp) == 3


def test_default_locations(tmp_path):
    j = job(tmp_path)
    assert spool_dir_for(load_config(env={}), j) == os.path.join(j.run_dir, "spool", "n1")
    d = spool_dir_for(load_config(env={}, spool_dir=str(tmp_path / "s")), j)
    assert d == os.path.join(str(tmp_path / "s"), f"flowcept-{os.geteuid()}", "job1", "n1")


def test_replay_in_key_order_removes_only_after_flush(tmp_path):
    cfg = load_config(env={})
    sp = Spool(str(tmp_path / "sp"), retry_ms=1)
    frames = {frame_key(f): f for f in (make_frame(s, 3)[0] for s in range(10))}
    for k, f in frames.items():
        sp.put(k, f)
    t = Flaky(cfg, job(tmp_path))
    t.fail_after = 2               # the first group of 4 fails at flush
    assert sp.replay(t, group=4) == (0, 0)
    assert len(sp) == 10 and t.stored == {}          # nothing removed, nothing lost
    t.fail_after = None
    sp._next_try = 0
    assert sp.replay(t, group=4) == (10, 30)
    assert len(sp) == 0 and t.stored == frames and t.flushes == 3   # 4 + 4 + 2 per round trip
    assert list(t.stored) == sorted(frames)


def test_crash_mid_replay_loses_and_doubles_nothing(tmp_path):
    """A replay killed after the flush of some groups: the rest is replayed
    later; the ones flushed but not yet removed come again and the store skips them."""
    from flowcept.store import open_store
    cfg = load_config(env={})
    sp = Spool(str(tmp_path / "sp"))
    frames = [make_frame(s, 3)[0] for s in range(8)]
    for f in frames:
        sp.put(frame_key(f), f)
    t = Flaky(cfg, job(tmp_path))
    real_unlink = os.unlink
    calls = {"n": 0}

    def crashing_unlink(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:     # dies while removing the 2nd group
            raise KeyboardInterrupt("simulated crash")
        return real_unlink(path, *a, **k)

    os.unlink = crashing_unlink
    try:
        with pytest.raises(KeyboardInterrupt):
            sp.replay(t, group=3)
    finally:
        os.unlink = real_unlink
    assert 0 < len(sp) < 8
    sp2 = Spool(sp.dir)             # the next process
    sp2.replay(t, group=3)
    assert len(sp2) == 0
    assert t.deliveries > 8         # some came twice ...
    with open_store("lmdb", str(tmp_path / "store"), cfg) as st:
        delivered = [(k, f) for k, f in t.stored.items()] + [(frame_key(f), f) for f in frames[3:6]]
        assert st.put_batches(delivered) == 8     # ... the store keeps each once
        assert st.put_batches(delivered) == 0


def test_corrupt_spool_file_is_set_aside(tmp_path):
    sp = Spool(str(tmp_path / "sp"))
    good, bad = make_frame(1, 3)[0], bytearray(make_frame(2, 3)[0])
    bad[200] ^= 0xFF
    sp.put(frame_key(good), good)
    sp.put(frame_key(bytes(make_frame(2, 3)[0])), bytes(bad))
    t = Flaky(load_config(env={}), job(tmp_path))
    assert sp.replay(t) == (1, 3)
    assert sp.corrupt == 1 and len(sp) == 0
    assert any(n.endswith(".corrupt") for n in os.listdir(sp.dir))


def _ring_with_tasks(path, cfg, n, start=0):
    ring = Ring.create(path, cfg, 5, 9, 0)
    ring.intern("host:n1")
    act = ring.intern("work")
    for i in range(start, start + n):
        assert lib.fc_ring_push_task(ring.handle, i + 1, 0, 9, i, i + 1, 0, 0, act, 0, 0, b"", 0) == 0
    return ring


def test_drainer_spools_when_down_releases_only_after_fsync_and_replays(tmp_path):
    cfg = load_config(env={}, batch_records=50, spool_retry_ms=1)
    t = Flaky(cfg, job(tmp_path))
    d = Drainer(cfg, t)
    assert isinstance(d.spool, Spool) and d.spool.dir == os.path.join(t.job.run_dir, "spool", "n1")
    prod = _ring_with_tasks(str(tmp_path / "r.ring"), cfg, 120)
    d.adopt(prod.path)
    t.up = False
    puts = []
    real_put = d.spool.put

    def watched_put(key, frame):
        before = d.rings[prod.path].stats()["tail"]
        path = real_put(key, frame)
        puts.append((before, d.rings[prod.path].stats()["tail"], os.path.exists(path)))
        return path

    d.spool.put = watched_put
    assert d.drain_once() == 120
    assert len(puts) == 3 and all(tail_before == tail_after for tail_before, tail_after, _ in puts)
    assert all(exists for *_, exists in puts)     # released after the file was durable
    assert prod.stats()["tail"] == prod.stats()["head"]
    assert len(d.spool) == 3 and t.stored == {}
    # flush failing after publish: the unflushed batch goes to the spool too
    for i in range(120, 150):
        lib.fc_ring_push_task(prod.handle, i + 1, 0, 9, i, i + 1, 0, 0, 1, 0, 0, b"", 0)
    t.up, t.fail_after = True, 0
    assert d.drain_once() == 30 and len(d.spool) == 4 and t.stored == {}
    # back: the drain thread's replay empties the spool
    t.fail_after = None
    assert d.replay_spool(force=True) == 150
    assert len(d.spool) == 0
    ids = sorted(int(x) for f in t.stored.values() for x in Batch(f).records["task_id"])
    assert ids == list(range(1, 151))
    prod.close()
    d.close()


def test_replay_dir_walks_spools(tmp_path):
    for node in ("a", "b"):
        sp = Spool(str(tmp_path / "spool" / node))
        for s in range(3):
            f = make_frame(s, 2, ring_uid=ord(node))[0]
            sp.put(frame_key(f), f)
    t = Flaky(load_config(env={}), job(tmp_path))
    assert replay_dir(str(tmp_path / "spool"), t) == (6, 12, 0)
    t2 = Flaky(load_config(env={}), job(tmp_path))
    assert replay_dir(str(tmp_path / "spool"), t2) == (0, 0, 0)
