"""Two writer processes on one multi-shard store never wait for each other
forever: shard write locks are taken in ascending order (a stage into a
lower shard first commits the higher ones; put_batches goes shard by shard)."""
import os
import subprocess
import sys
import textwrap
import zlib

import pytest

from flowcept.config import load_config
from flowcept.store.lmdb import LmdbStore
from support.framegen import frame_key, make_frame

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each child opens the store (opening takes a shard's write lock briefly),
# waits, stages its first frame, says so, waits for "go" (so both hold a
# shard lock), then stages its second frame (the other shard) and commits.
CHILD = textwrap.dedent("""
    import sys
    from flowcept.config import load_config
    from flowcept.store.lmdb import LmdbStore
    path, mode, first, second = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    frames = [open(first, "rb").read(), open(second, "rb").read()]
    from flowcept.native.batch import Batch
    st = LmdbStore(path, load_config(env={}, lmdb_shards=2))
    print("open", flush=True)
    sys.stdin.readline()
    if mode == "stage":
        st.stage(Batch(frames[0]).key, frames[0])
        print("holding", flush=True)
        sys.stdin.readline()
        st.stage(Batch(frames[1]).key, frames[1])
        st.commit_staged()
    else:
        print("holding", flush=True)
        sys.stdin.readline()
        for _ in range(200):     # many rounds, opposite orders in the two processes
            st.put_batches([(Batch(f).key, f) for f in frames])
    st.close()
    print("done", flush=True)
""")


def frames_by_shard(n_each=2):
    """Frames whose keys fall in shard 0 and in shard 1 of a 2-shard store."""
    by = {0: [], 1: []}
    ring = 1
    while min(len(v) for v in by.values()) < n_each:
        f = make_frame(0, 50, ring_uid=ring)[0]
        by[zlib.crc32(frame_key(f)[:16]) % 2].append(f)
        ring += 1
    return by


def run_pair(tmp_path, mode, orders):
    path = str(tmp_path / "store")
    LmdbStore(path, load_config(env={}, lmdb_shards=2)).close()   # created once
    procs = []
    for i, (a, b) in enumerate(orders):
        fa, fb = tmp_path / f"{i}a.frame", tmp_path / f"{i}b.frame"
        fa.write_bytes(a)
        fb.write_bytes(b)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, path, mode, str(fa), str(fb)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT)))
    try:
        for step in ("open", "holding"):
            for p in procs:
                assert p.stdout.readline().strip() == step, p.stderr.read()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("two writers on one 2-shard store are stuck (shard lock order)")
            assert p.returncode == 0, err
            outs.append(out)
        assert all("done" in o for o in outs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with LmdbStore(path, readonly=True) as st:
        return sorted(k for k, _ in st.scan())


def test_two_processes_staging_shards_in_opposite_orders_both_finish(tmp_path):
    by = frames_by_shard()
    # A: shard 0 then shard 1; B: shard 1 then shard 0 (each holds its first lock)
    keys = run_pair(tmp_path, "stage", [(by[0][0], by[1][0]), (by[1][1], by[0][1])])
    want = sorted(frame_key(f) for f in (by[0][0], by[1][0], by[1][1], by[0][1]))
    assert keys == want


def test_two_processes_put_batches_in_opposite_orders_store_each_once(tmp_path):
    by = frames_by_shard()
    a, b = by[0][0], by[1][0]
    keys = run_pair(tmp_path, "put", [(a, b), (b, a)])
    assert keys == sorted([frame_key(a), frame_key(b)])


def test_stage_into_a_lower_shard_commits_the_higher_first(tmp_path):
    by = frames_by_shard()
    st = LmdbStore(str(tmp_path / "s"), load_config(env={}, lmdb_shards=2))
    try:
        assert st.stage(frame_key(by[1][0]), by[1][0]) == 1
        assert st.stage(frame_key(by[0][0]), by[0][0]) == 1
        assert st.early_commits == 1
        assert st.has(frame_key(by[1][0]))         # committed before shard 0 was taken
        assert not st.has(frame_key(by[0][0]))     # still staged
        st.commit_staged()
        assert st.has(frame_key(by[0][0]))
        # ascending order: no early commit
        n = st.put_batches([(frame_key(f), f) for f in (by[1][1], by[0][1])])
        assert n == 2 and st.early_commits == 1
    finally:
        st.close()
