"""The shared-memory ring through its Python handles: producers in threads
and processes, a consumer in another process, wrap-around, full-ring
policies, and recovery after SIGKILL."""
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

from flowcept.native import ffi, lib
from flowcept.native.batch import Batch
from flowcept.config import load_config
from flowcept.native.ring import Ring, RingError


def cfg(**kw):
    return load_config(env={}, **kw)


def make_ring(path, config, job_id=1, workflow_id=1, rank=0):
    """A producer ring with string 0 interned (pushes must use interned ids)."""
    ring = Ring.create(path, config, job_id, workflow_id, rank)
    ring.intern("a")
    return ring


def push(ring, task_id, payload=b"", activity=0, rank=0, thread=0):
    return lib.fc_ring_push_task(ring.handle, task_id, 0, 7, task_id, task_id + 1, rank, thread,
                                 activity, 0, 0, payload, len(payload))


def drain(ring, cap=1 << 20, max_records=1 << 20):
    """All committed records as (records array, payload list), releasing as it goes."""
    buf = ffi.new("char[]", cap)
    consumed = ffi.new("uint64_t *")
    recs, pays = [], []
    while True:
        n = lib.fc_ring_pack(ring.handle, buf, cap, max_records, consumed)
        assert n >= 0, os.strerror(-n)
        if n == 0:
            break
        frame = bytes(ffi.buffer(buf, n))
        b = Batch(frame)  # validates (crc etc.)
        recs.append(b.records.copy())
        pays.extend(b.payload_of(i) for i in range(len(b)))
        lib.fc_ring_release(ring.handle, int(b.header["seq"]) + consumed[0])
    if not recs:
        return np.zeros(0, dtype=[("task_id", "<u8")]), []
    return np.concatenate(recs), pays


def test_roundtrip_contents_and_strings(tmp_path):
    path = str(tmp_path / "r.ring")
    prod = Ring.create(path, cfg(ring_bytes=1 << 16), job_id=5, workflow_id=7, rank=3)
    a = prod.intern("alpha")
    assert prod.intern("alpha") == a and prod.intern("beta") == a + 1
    for i in range(100):
        assert push(prod, i + 1, payload=b"x" * (i % 13), activity=a, rank=3) == 0
    cons = Ring.open(path)
    recs, pays = drain(cons)
    assert recs["task_id"].tolist() == list(range(1, 101))
    assert [len(p) for p in pays] == [i % 13 for i in range(100)]
    assert set(recs["rank"].tolist()) == {3} and set(recs["workflow_id"].tolist()) == {7}
    st = cons.stats()
    assert st["pushed"] == 100 and st["job_id"] == 5 and st["tail"] == st["head"]
    prod.close()
    assert cons.stats()["closed"]
    cons.close()


def test_wraparound_many_laps(tmp_path):
    path = str(tmp_path / "r.ring")
    prod = make_ring(path, cfg(ring_bytes=4096, full_policy="drop"))
    cons = Ring.open(path)
    got = []
    for lap in range(200):
        for i in range(20):
            assert push(prod, lap * 20 + i + 1, payload=bytes([i]) * (i * 3)) == 0
        recs, pays = drain(cons)
        got.extend(recs["task_id"].tolist())
        assert [p for p in pays] == [bytes([i]) * (i * 3) for i in range(20)]
    assert got == list(range(1, 4001))
    assert cons.stats()["head"] > 100 * 4096
    prod.close()
    cons.close()


def test_threads_with_concurrent_consumer(tmp_path):
    path = str(tmp_path / "r.ring")
    prod = make_ring(path, cfg(ring_bytes=1 << 16, full_policy="block", block_timeout_ms=5000))
    cons = Ring.open(path)
    n_threads, per = 4, 20000
    done = threading.Event()
    seen = []

    def consumer():
        while not done.is_set():
            recs, _ = drain(cons)
            seen.extend(recs["task_id"].tolist())
        recs, _ = drain(cons)
        seen.extend(recs["task_id"].tolist())

    def producer(t):
        for i in range(per):
            assert push(prod, (t << 32) | i, thread=t) == 0

    c = threading.Thread(target=consumer)
    c.start()
    ps = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    done.set()
    c.join()
    assert sorted(seen) == sorted((t << 32) | i for t in range(n_threads) for i in range(per))
    # per producer thread, order is preserved
    arr = np.array(seen, dtype=np.uint64)
    for t in range(n_threads):
        mine = arr[(arr >> np.uint64(32)) == t]
        assert (np.diff(mine.astype(np.int64)) > 0).all()
    assert cons.stats()["dropped"] == 0
    prod.close()
    cons.close()


def _child_consumer(path, q):
    ring = Ring.open(path)
    total = []
    deadline = time.time() + 30
    while time.time() < deadline:
        recs, _ = drain(ring)
        total.extend(recs["task_id"].tolist())
        if ring.stats()["closed"] and ring.stats()["tail"] == ring.stats()["head"]:
            break
        time.sleep(0.001)
    q.put(total)


def test_consumer_in_another_process(tmp_path):
    path = str(tmp_path / "r.ring")
    prod = make_ring(path, cfg(ring_bytes=1 << 14, full_policy="block", block_timeout_ms=10000))
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_child_consumer, args=(path, q))
    p.start()
    for i in range(50000):
        assert push(prod, i + 1, payload=b"p" * (i % 40)) == 0
    prod.close()
    got = q.get(timeout=60)
    p.join(10)
    assert got == list(range(1, 50001))


@pytest.mark.parametrize("policy", ["spill", "drop", "block"])
def test_full_ring_policies(tmp_path, policy):
    path = str(tmp_path / "r.ring")
    prod = make_ring(path, cfg(ring_bytes=4096, full_policy=policy, block_timeout_ms=20))
    results = [push(prod, i + 1, payload=b"z" * 40) for i in range(300)]
    st = prod.stats()
    in_ring = st["pushed"]
    assert 0 < in_ring < 300
    cons = Ring.open(path)
    recs, _ = drain(cons)
    assert recs["task_id"].tolist() == list(range(1, in_ring + 1))
    if policy == "spill":
        assert results.count(1) == st["spilled"] == 300 - in_ring and st["dropped"] == 0
        spill = prod.spill_path
        assert os.stat(spill).st_mode & 0o777 == 0o600
        buf = ffi.new("char[]", 1 << 20)
        consumed = ffi.new("uint64_t *")
        n = lib.fc_spool_pack(cons.handle, spill.encode(), 0, 0, buf, 1 << 20, 1 << 20, consumed)
        b = Batch(bytes(ffi.buffer(buf, n)))
        assert b.records["task_id"].tolist() == list(range(in_ring + 1, 301))
        assert all(b.payload_of(i) == b"z" * 40 for i in range(len(b)))
        assert int(b.header["seq"]) >> 63 == 1 and consumed[0] == os.path.getsize(spill)
    else:
        expected_rc = -28 if policy == "drop" else -110   # ENOSPC / ETIMEDOUT
        assert results.count(expected_rc) == st["dropped"] == 300 - in_ring
    prod.close()
    cons.close()


def _killed_producer(path, counter_path):
    r = make_ring(path, cfg(ring_bytes=1 << 20, full_policy="drop"), 9, 9, 1)
    counter = np.memmap(counter_path, dtype=np.uint64, mode="r+", shape=(1,))
    i = 0
    while True:
        i += 1
        rc = push(r, i, payload=i.to_bytes(8, "little") * 3)
        if rc == 0:
            counter[0] = i       # committed: visible to the parent after the kill
        else:
            time.sleep(0.0005)   # ring full: wait for nothing; the parent will kill us


def test_sigkill_producer_loses_no_committed_record(tmp_path):
    path = str(tmp_path / "r.ring")
    counter_path = str(tmp_path / "count")
    np.zeros(1, np.uint64).tofile(counter_path)
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_killed_producer, args=(path, counter_path))
    p.start()
    counter = np.memmap(counter_path, dtype=np.uint64, mode="r", shape=(1,))
    deadline = time.time() + 20
    while counter[0] < 5000 and time.time() < deadline:
        time.sleep(0.001)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    committed = int(counter[0])
    assert committed >= 5000
    cons = Ring.open(path)
    assert not cons.stats()["closed"]
    recs, pays = drain(cons)
    ids = recs["task_id"].tolist()
    # every record the child saw committed is there, in order, intact
    assert ids[:committed] == list(range(1, committed + 1))
    assert len(ids) <= committed + 1
    for i, p_ in zip(ids, pays):
        assert p_ == i.to_bytes(8, "little") * 3
    cons.close()


def test_open_refuses_symlink_and_garbage(tmp_path):
    real = tmp_path / "real.ring"
    real.write_bytes(b"\0" * 8192)
    with pytest.raises(RingError):
        Ring.open(str(real))          # bad header
    link = tmp_path / "link.ring"
    Ring.create(str(tmp_path / "ok.ring"), cfg(ring_bytes=4096), 1, 1, 0).close()
    os.symlink(tmp_path / "ok.ring", link)
    with pytest.raises(RingError):
        Ring.open(str(link))          # O_NOFOLLOW
    with pytest.raises(RingError):
        Ring.create(str(tmp_path / "ok.ring"), cfg(ring_bytes=4096), 1, 1, 0)  # exists


def test_push_with_unknown_activity_id_is_rejected(tmp_path):
    prod = make_ring(str(tmp_path / "r.ring"), cfg(ring_bytes=4096))
    assert push(prod, 1, activity=5) == -22   # EINVAL: intern names first
    assert prod.stats()["pushed"] == 0
    prod.close()
