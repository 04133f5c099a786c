"""Lineage on columns (flowcept.query.lineage.LineageIndex, behind every source's
ancestors/descendants and the UI's lineage graph) walks exactly the links of the
archive's own lineage (flowcept.archive.lineage: payloads decoded in Python, values
compared as Python values): parent links and data dependencies with the time rule,
1 == 1.0, str != bytes, over chains, popular values and hostile payloads (rows the C
key writer leaves to Python), from an LMDB store and from its HDF5 archive."""
import os
import subprocess
import sys

import msgpack
import numpy as np
import pytest

import flowcept.archive as fa
from flowcept.archive.lineage import Lineage
from flowcept.access.core import Access
from flowcept.native.batch import batch_key, build_frame
from flowcept.query.limits import UNBOUNDED
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, RECORD_DTYPE
from support.hostile_payloads import hostile_frame
from support.lineage_reference import python_walk

T0 = 1_800_000_000_000_000_000


def chain_frame(seq: int, n: int = 1500):
    """Tasks that each use the value the one before generated (a link only when that one
    ended in time), values shared by many (ints equal to floats), bytes next to str,
    and parent links (every fifth task starts a group)."""
    rng = np.random.default_rng(seq)
    i = np.arange(n) + seq * n
    recs = np.zeros(n, RECORD_DTYPE)
    recs["task_id"] = i + 1
    recs["parent_id"] = np.where(i % 5 == 0, 0, i - i % 5 + 1)
    recs["workflow_id"] = 0x77
    recs["start_ns"] = T0 + i * 1000
    recs["end_ns"] = recs["start_ns"] + rng.choice([500, 1000, 1000, 1500], n)   # before, at, after the next start
    recs["rank"] = seq
    recs["activity_id"] = 1 + i % 3
    recs["flags"] = FLAG_PAYLOAD_MSGPACK
    pays = []
    for k in i.tolist():
        used = {"in": f"v{k - 1}", "k": k % 7, "b": b"v%d" % (k - 3)}
        if k % 97 == 0:
            used["many"] = [1.5, "shared", k % 4]
        gen = {"out": f"v{k}", "n": float(k % 11), "s": "shared" if k % 50 == 0 else None}
        pays.append(msgpack.packb({"used": used, "generated": gen}, use_bin_type=True))
    return build_frame(recs, pays, ["host:n0", "load", "step", "save"], job_id=1, ring_uid=seq + 1, seq=seq)


def _job(base: str, name: str, frames):
    from flowcept.store.lmdb import LmdbStore
    run = os.path.join(base, "runs", name)
    st = LmdbStore(os.path.join(run, "store", "node0"))
    try:
        st.put_batches([(batch_key(9, 1 + k, k), f) for k, f in enumerate(frames)])
    finally:
        st.close()
    h5 = os.path.join(base, f"{name}.h5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    r = subprocess.run([sys.executable, "-m", "flowcept", "compact", run, "-o", h5], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return run, h5


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("lineage"))
    return {"chain": _job(base, "chain", [chain_frame(s) for s in range(3)]),
            "hostile": _job(base, "hostile", [hostile_frame(300 + k, storable=True, t0=T0 + k * 10 ** 9)
                                              for k in range(3)])}


@pytest.mark.parametrize("name", ["chain", "hostile"])
def test_walks_equal_the_archive_lineage(jobs, name):
    run, h5 = jobs[name]
    with fa.open(h5) as arc:
        ids = [arc.task(i)["task_id"] for i in range(arc.n)]
        rng = np.random.default_rng(5)
        sample = rng.choice(arc.n, 40, replace=False).tolist() + [0, arc.n - 1]
        ref = Lineage(arc)   # the archive's Python walk over decoded payloads: the reference
        want = {(i, up): sorted(ids[j] for j in python_walk(ref, i, up)) for i in sample for up in (True, False)}
        # the archive's own ancestors/descendants walk the index, by either kind of link
        for i in sample[:12]:
            for up in (True, False):
                for parents, data in ((True, True), (True, False), (False, True)):
                    got = (arc.ancestors if up else arc.descendants)(ids[i], parents=parents, data=data)
                    assert got.indices.tolist() == python_walk(ref, i, up, parents=parents, data=data).tolist()
    assert sum(len(v) for v in want.values()) > 200     # the walks do go somewhere
    for spec in (run, h5):
        a = Access([spec], query_timeout=0)
        try:
            for (i, up), w in want.items():
                got = a.lineage(ids[i], "ancestors" if up else "descendants")
                assert sorted(d["task_id"] for d in got["items"]) == w, (spec, i, up)
                assert got["count"] == len(w)
            # the index is built once and kept while the data stay the same
            src = a.source(None)
            assert src.lineage_index(UNBOUNDED) is src.lineage_index(UNBOUNDED)
        finally:
            a.close()


def test_chain_links_follow_the_time_rule(jobs):
    """An ancestor by data ended no later than the task started; the chain is walked
    through many levels."""
    run, _h5 = jobs["chain"]
    a = Access([run], query_timeout=0)
    try:
        src = a.source(None)
        index = src.lineage_index(UNBOUNDED)
        deepest = max(range(0, index.n, 37), key=lambda r: len(index.walk(r, True)))
        rows = index.walk(deepest, True)
        assert len(rows) > 20 and deepest not in rows.tolist()
        assert (index.start[rows] <= index.start[deepest]).all()
        # walks at once (the service's threads) each keep their own state
        from concurrent.futures import ThreadPoolExecutor
        starts = list(range(0, index.n, 211))
        alone = [index.walk(r, up).tolist() for r in starts for up in (True, False)]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda a: index.walk(*a).tolist(),
                                     [(r, up) for r in starts for up in (True, False)]))
        assert together == alone
        with pytest.raises(KeyError):
            index.row_of("0000000000000077-00000000deadbeef")
        with pytest.raises(KeyError):
            index.row_of("not-an-id")
    finally:
        a.close()


def test_an_index_longer_than_a_query_budget_is_built_once_for_later_queries(jobs, monkeypatch):
    """Building the index reads every block (tens of seconds at 10 M tasks): a query past
    its budget gets the budget error naming the build's progress, the build goes on, and
    a later query is answered from it; the build ran once."""
    import threading
    from flowcept.access import sources
    from flowcept.query.limits import Budget, QueryTimeout
    run, _h5 = jobs["chain"]
    go, builds = threading.Event(), []

    class SlowIndex(sources.LineageIndex):
        def __init__(self, table, budget):
            builds.append(1)
            assert go.wait(60)
            super().__init__(table, budget)

    monkeypatch.setattr(sources, "LineageIndex", SlowIndex)
    a = Access([run], query_timeout=0)
    try:
        src = a.source(None)
        some = a.tasks(None, {}, limit=1)["items"][0]["task_id"]
        for _ in range(2):   # the second query waits on the same build
            with pytest.raises(QueryTimeout, match=r"lineage index .* is being built \(0 of \d+ blocks"):
                src.lineage(some, True, Budget(0.2))
        go.set()
        want = a.lineage(some, "descendants")   # unbounded: waits for the build
        assert want["count"] > 0
        assert src.lineage(some, False, Budget(0.2)) and builds == [1]
    finally:
        go.set()
        a.close()


def test_a_failed_index_build_is_an_error_of_its_queries_and_tried_again(jobs, monkeypatch):
    from flowcept.access import sources
    from flowcept.query.limits import UNBOUNDED
    run, _h5 = jobs["chain"]
    tries = []

    class FailingOnce(sources.LineageIndex):
        def __init__(self, table, budget):
            tries.append(1)
            if len(tries) == 1:
                raise OSError("disk went away")
            super().__init__(table, budget)

    monkeypatch.setattr(sources, "LineageIndex", FailingOnce)
    a = Access([run], query_timeout=0)
    try:
        src = a.source(None)
        with pytest.raises(OSError, match="disk went away"):
            src.lineage_index(UNBOUNDED)
        assert src.lineage_index(UNBOUNDED).n > 0 and len(tries) == 2
    finally:
        a.close()
