"""Compaction in bounded memory: sorted runs in a temporary file, merged k-way.

The same stores compacted with the whole sort in memory and with a memory bound that forces
many runs (and small blocks, so that ties of start time fall across merge rounds) must give
the same archive, row for row and payload for payload; duplicates are dropped the same way."""
import os
import subprocess
import sys

import msgpack
import numpy as np
import pytest

import flowcept.archive as fa
from flowcept.record.layout import STATUS_RUNNING

from archive_helpers import ROOT, synth, write_store

cmod = __import__("importlib").import_module("flowcept.archive.compact")


def _stores(base, n_rings=6, per_ring=4000, seed=3):
    """Rings whose records interleave in time, with many equal start times across rings."""
    rng = np.random.default_rng(seed)
    for r in range(n_rings):
        recs, pays, strings = synth(per_ring, start_id=1 + r * per_ring, rank=r)
        # coarse times: many ties within and across rings; nearly sorted per ring
        recs["start_ns"] = 1_800_000_000_000_000_000 + (np.arange(per_ring) // 3) * 1000 \
            + rng.integers(0, 3, per_ring) * 1000
        recs["end_ns"] = recs["start_ns"] + 500
        write_store(os.path.join(base, "store", f"n{r}"), recs, pays, strings, ring_uid=r + 1,
                    per_batch=333, workflow=(0xABC, {"name": "w"}) if r == 0 else None)


def _same(a_path, b_path):
    with fa.open(a_path) as a, fa.open(b_path) as b:
        assert len(a) == len(b)
        assert np.array_equal(a.tasks, b.tasks)
        assert a.decoded_payloads() == b.decoded_payloads()
        assert a.workflows == b.workflows


def test_runs_merged_equal_in_memory_sort(tmp_path):
    base = str(tmp_path / "job")
    _stores(base)
    mem = fa.compact(base, str(tmp_path / "mem.h5"))
    assert mem.runs == 0 and mem.records == 24000
    small = fa.compact(base, str(tmp_path / "runs.h5"), memory_bytes=cmod.MIN_MEMORY, chunk_rows=1000)
    assert small.runs == 0 and small.records == 24000      # 16 MiB holds 24000 rows: one run, in memory
    # force many runs and tiny merge blocks
    orig = (cmod._SCAN_SHARE, cmod._MERGE_SHARE, cmod._MIN_BLOCK)
    try:
        cmod._SCAN_SHARE, cmod._MERGE_SHARE, cmod._MIN_BLOCK = 0.0002, 0.00002, 7
        many = fa.compact(base, str(tmp_path / "many.h5"), chunk_rows=1000)
    finally:
        cmod._SCAN_SHARE, cmod._MERGE_SHARE, cmod._MIN_BLOCK = orig
    assert many.runs > 5 and many.records == 24000
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "runs.h5"))
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "many.h5"))
    with fa.open(str(tmp_path / "many.h5")) as a:
        s = a.tasks["start_ns"]
        assert np.all(np.diff(s) >= 0)
        with __import__("h5py").File(str(tmp_path / "many.h5")) as f:
            B = int(f["index"].attrs["block_rows"])
            assert B == 1000
            assert np.array_equal(f["index/start_min"][()], s[::B])
            assert np.array_equal(f["index/end_max"][()],
                                  np.maximum.reduceat(a.tasks["end_ns"], np.arange(0, len(s), B)))
    # no temporary file is left beside the output
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_duplicates_across_runs_and_rounds(tmp_path, monkeypatch):
    """The same tasks stored twice (other batch keys), and RUNNING records of tasks whose
    finished record comes later: dropped across runs, a finished record kept."""
    recs, pays, strings = synth(3000)
    recs["start_ns"] = 1_800_000_000_000_000_000 + (np.arange(3000) // 10) * 1000   # ties of 10
    base = tmp_path / "job"
    running = recs.copy()
    running["status"] = STATUS_RUNNING
    running["end_ns"] = 0
    write_store(str(base / "store" / "a"), running[::2], pays[::2], strings, ring_uid=1, per_batch=97)
    write_store(str(base / "store" / "b"), recs, pays, strings, ring_uid=2, per_batch=101)
    write_store(str(base / "store" / "c"), recs[1000:2000], pays[1000:2000], strings, ring_uid=3,
                per_batch=50)
    mem = fa.compact(str(base), str(tmp_path / "mem.h5"))
    monkeypatch.setattr(cmod, "_SCAN_SHARE", 0.00005)
    monkeypatch.setattr(cmod, "_MERGE_SHARE", 0.000005)
    monkeypatch.setattr(cmod, "_MIN_BLOCK", 5)
    many = fa.compact(str(base), str(tmp_path / "many.h5"), chunk_rows=128)
    assert many.runs > 10
    for rep in (mem, many):
        assert rep.records == 3000 and rep.duplicates == 1500 + 1000
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "many.h5"))
    with fa.open(str(tmp_path / "many.h5")) as a:
        assert sorted(a.tasks["task_id"].tolist()) == list(range(1, 3001))
        assert not np.any(a.tasks["status"] == STATUS_RUNNING)     # finished kept over RUNNING
        assert np.array_equal(np.sort(a.tasks["end_ns"]), np.sort(recs["end_ns"]))
        for i in range(0, 3000, 37):
            tid = int(a.tasks["task_id"][i])
            assert a.used(i) == {"i": tid}


def test_append_merges_archive_rows_as_a_run(tmp_path, monkeypatch):
    recs, pays, strings = synth(2000)
    write_store(str(tmp_path / "a" / "store" / "n"), recs[:1200], pays[:1200], strings, ring_uid=1)
    write_store(str(tmp_path / "b" / "store" / "n"), recs[800:], pays[800:], strings, ring_uid=2)
    ref = str(tmp_path / "ref.h5")
    fa.compact(str(tmp_path / "a"), ref)
    fa.compact(str(tmp_path / "b"), ref)
    monkeypatch.setattr(cmod, "_SCAN_SHARE", 0.00005)
    monkeypatch.setattr(cmod, "_MERGE_SHARE", 0.000005)
    monkeypatch.setattr(cmod, "_MIN_BLOCK", 5)
    out = str(tmp_path / "x.h5")
    fa.compact(str(tmp_path / "a"), out, chunk_rows=100)
    rep = fa.compact(str(tmp_path / "b"), out, chunk_rows=100)
    assert rep.records == 2000 and rep.new_records == 800 and rep.duplicates == 400 and rep.runs > 1
    _same(ref, out)


def test_memory_bound_is_checked(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        fa.compact(str(tmp_path), str(tmp_path / "x.h5"), memory_bytes=1 << 20)


def _force(monkeypatch, path):
    """Compactions after this take the given path: "chains" (the stores' batches merged
    straight from the stores), "runs" (sorted runs in the temporary file); the default,
    when everything fits, is one sorted run in memory."""
    if path == "chains":
        monkeypatch.setattr(cmod, "_SCAN_BYTES_PER_ROW", 1 << 30)   # the run buffer holds nothing
    elif path == "runs":
        monkeypatch.setattr(cmod, "_SCAN_SHARE", 0.00005)
        monkeypatch.setattr(cmod, "_MERGE_SHARE", 0.000005)
        monkeypatch.setattr(cmod, "_MIN_BLOCK", 5)


def test_chain_merge_equals_in_memory_sort(tmp_path, monkeypatch):
    """Batches out of start order within themselves and overlapping their neighbours,
    ties of start time within and across rings: the chains give the same archive, row for
    row, as the in-memory sort and as the sorted runs."""
    base = str(tmp_path / "job")
    _stores(base)
    mem = fa.compact(base, str(tmp_path / "mem.h5"), chunk_rows=1000)
    assert mem.runs == 0 and mem.chains == 0
    with monkeypatch.context() as m:
        _force(m, "chains")
        ch = fa.compact(base, str(tmp_path / "chains.h5"), chunk_rows=1000)
    assert ch.chains >= 6 and ch.runs == 0 and ch.records == 24000
    with monkeypatch.context() as m:
        _force(m, "runs")
        runs = fa.compact(base, str(tmp_path / "runs.h5"), chunk_rows=1000)
    assert runs.runs > 5 and runs.chains == 0
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "chains.h5"))
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "runs.h5"))
    with __import__("h5py").File(str(tmp_path / "chains.h5")) as f, \
            __import__("h5py").File(str(tmp_path / "mem.h5")) as g:
        for name in ("start_min", "start_max", "end_max"):
            assert np.array_equal(f[f"index/{name}"][()], g[f"index/{name}"][()])
        assert np.array_equal(f["payloads"][()], g["payloads"][()])
        assert list(f["strings"].asstr()[()]) == list(g["strings"].asstr()[()])


def test_many_stores_open_a_few_at_a_time(tmp_path, monkeypatch):
    """More stores than may stay open: the rows go through sorted runs (chains would read
    every store all along), the stores are opened and closed as the passes go, and the
    archive is the same."""
    base = str(tmp_path / "job")
    _stores(base)
    assert fa.compact(base, str(tmp_path / "mem.h5"), chunk_rows=1000).runs == 0
    opened, live = [], [0, 0]          # opens; open now, most open at once
    real_open = __import__("flowcept.store", fromlist=["open_store_at"]).open_store_at

    def counting_open(path, *a, **k):
        st = real_open(path, *a, **k)
        opened.append(path)
        live[0] += 1
        live[1] = max(live[1], live[0])
        real_close = st.close

        def close():
            live[0] -= 1
            real_close()
        st.close = close
        return st

    monkeypatch.setattr("flowcept.store.open_store_at", counting_open)
    monkeypatch.setattr(cmod, "_MAX_OPEN_STORES", 2)
    _force(monkeypatch, "chains")
    few = fa.compact(base, str(tmp_path / "few.h5"), chunk_rows=1000)
    assert few.chains == 0 and few.runs > 1 and few.records == 24000
    assert len(opened) > 2 * 6            # reopened: summaries, index pass, then rows and payloads
    assert live == [0, 2]                 # never more than the cap open, all closed at the end
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "few.h5"))


def test_chains_follow_the_rings(tmp_path, monkeypatch):
    """Rings whose batches are each in start order form one chain each, however their
    times interleave; a ring whose batches go back in time starts new chains."""
    base = tmp_path / "job"
    for r in range(4):
        recs, pays, strings = synth(2000, start_id=1 + r * 2000, rank=r)
        recs["start_ns"] = 1_800_000_000_000_000_000 + np.arange(2000) * 1000 + r   # interleaved
        write_store(str(base / "store" / f"n{r}"), recs, pays, strings, ring_uid=r + 1, per_batch=100)
    recs, pays, strings = synth(1000, start_id=100_001, rank=9)
    recs["start_ns"] = 1_800_000_000_000_000_000 + (np.arange(1000) % 500) * 1000 + 7   # two passes
    write_store(str(base / "store" / "z"), recs, pays, strings, ring_uid=9, per_batch=100)
    assert fa.compact(str(base), str(tmp_path / "mem.h5")).chains == 0
    _force(monkeypatch, "chains")
    ch = fa.compact(str(base), str(tmp_path / "chains.h5"), chunk_rows=512)
    assert ch.chains == 4 + 2 and ch.records == 9000      # ring z: one chain per pass
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "chains.h5"))


@pytest.mark.parametrize("path", ["chains", "runs"])
def test_duplicates_dropped_the_same_on_every_path(tmp_path, monkeypatch, path):
    recs, pays, strings = synth(3000)
    recs["start_ns"] = 1_800_000_000_000_000_000 + (np.arange(3000) // 10) * 1000   # ties of 10
    base = tmp_path / "job"
    running = recs.copy()
    running["status"] = STATUS_RUNNING
    running["end_ns"] = 0
    write_store(str(base / "store" / "a"), running[::2], pays[::2], strings, ring_uid=1, per_batch=97)
    write_store(str(base / "store" / "b"), recs, pays, strings, ring_uid=2, per_batch=101)
    write_store(str(base / "store" / "c"), recs[1000:2000], pays[1000:2000], strings, ring_uid=3,
                per_batch=50)
    mem = fa.compact(str(base), str(tmp_path / "mem.h5"))
    _force(monkeypatch, path)
    other = fa.compact(str(base), str(tmp_path / "other.h5"), chunk_rows=128)
    assert (other.chains if path == "chains" else other.runs) > 1
    assert mem.duplicates == other.duplicates == 1500 + 1000
    _same(str(tmp_path / "mem.h5"), str(tmp_path / "other.h5"))


@pytest.mark.parametrize("path", ["chains", "runs"])
def test_append_on_every_path(tmp_path, monkeypatch, path):
    """Merging into an archive: its rows come first among equal start times, then the
    stores' rows in scan order, whichever path the merge takes."""
    recs, pays, strings = synth(2000)
    recs["start_ns"] = 1_800_000_000_000_000_000 + (np.arange(2000) // 4) * 1000
    write_store(str(tmp_path / "a" / "store" / "n"), recs[:1200], pays[:1200], strings, ring_uid=1)
    write_store(str(tmp_path / "b" / "store" / "n"), recs[800:], pays[800:], strings, ring_uid=2)
    b2 = recs[1500:].copy()
    b2["task_id"] += 10_000                          # other tasks at the same times
    write_store(str(tmp_path / "b" / "store" / "m"), b2, pays[1500:], strings, ring_uid=3)
    ref = str(tmp_path / "ref.h5")
    fa.compact(str(tmp_path / "a"), ref)
    _force(monkeypatch, "runs")                      # the reference merge: sorted runs
    fa.compact(str(tmp_path / "b"), ref)
    monkeypatch.undo()
    out = str(tmp_path / "x.h5")
    fa.compact(str(tmp_path / "a"), out, chunk_rows=100)
    _force(monkeypatch, path)
    rep = fa.compact(str(tmp_path / "b"), out, chunk_rows=100)
    assert rep.records == 2500 and rep.new_records == 1300 and rep.duplicates == 400
    assert (rep.chains if path == "chains" else rep.runs) >= 1
    _same(ref, out)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("big")
    code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'benchmarks')!r}); "
            f"import bench_archive as b; b.build_store({str(store / 'store' / 'n')!r}, 1_200_000)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return store


@pytest.mark.parametrize("bound_mib,path", [(32, "runs"), (128, "chains")])
def test_memory_stays_bounded(tmp_path, big_store, bound_mib, path):
    """Anonymous memory of a compaction of 1.2 M records (16 rings) in a fresh interpreter,
    sampled while it runs: within the configured bound plus the compression pool's chunks
    in flight and HDF5's caches.  Under 32 MiB one block per ring does not fit (sorted runs
    in the temporary file); under 128 MiB it does (the rings merged from the store)."""
    store = big_store
    probe = r'''
import json, sys, threading
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) << 10
import h5py, numpy, msgpack, flowcept.archive as fa, flowcept.archive.hdf5, flowcept.store.lmdb
import flowcept.native.batch, flowcept.query.tasks
base = anon(); peak = [base]; stop = threading.Event()
def sample():
    while not stop.wait(0.002):
        peak[0] = max(peak[0], anon())
threading.Thread(target=sample, daemon=True).start()
rep = fa.compact(sys.argv[1], sys.argv[2], memory_bytes=int(sys.argv[3]), progress=False)
stop.set()
print(json.dumps({"records": rep.records, "runs": rep.runs, "chains": rep.chains,
                  "extra": peak[0] - base}))
'''
    import json
    bound = bound_mib << 20
    res = subprocess.run([sys.executable, "-c", probe, str(store), str(tmp_path / "o.h5"), str(bound)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["records"] == 1_200_000
    if path == "runs":
        assert got["runs"] >= 2 and got["chains"] == 0
    else:
        assert got["chains"] == 16 and got["runs"] == 0
    # the bound plus the compression pool's chunks in flight and HDF5's caches
    assert got["extra"] < bound + (24 << 20), got
