"""flowcept.query.search: correctness against brute force over the same data, and
pruning by the summaries index (a selective query reads fewer batches)."""
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcept.config import load_config
from flowcept.query.filters import matches
from flowcept.query.search import last_stats, query
from flowcept.query.tasks import read_tasks
from flowcept.store import open_store
from support.framegen import ACTIVITIES, make_frame

WF = [0xA1, 0xB2]
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q") / "store")
    rng = random.Random(1)
    items = []
    for seq in range(60):
        rank = seq % 4
        frame, _, _ = make_frame(seq, 40, ring_uid=rank + 1, rank=rank, workflow_id=WF[seq % 2],
                                 node=f"n{rank // 2}", t0=T0, rng=rng, origin=rank)
        items.append((None, frame))
    from flowcept.native.batch import Batch
    items = [(Batch(f).key, f) for _, f in items]
    with open_store("lmdb", path, load_config(env={}, lmdb_shards=3)) as s:
        assert s.put_batches(items) == 60
    return path


@pytest.fixture(scope="module")
def everything(store):
    return read_tasks(store)


def t_sec(seq, i=0):
    return (T0 + seq * 10_000_000 + i * 1000) / 1e9


def _ids(docs):
    return sorted(d["task_id"] for d in docs)


CASES = [
    ({"activity_id": "diffuse"}, lambda d: d["activity_id"] == "diffuse"),
    ({"rank": 2}, lambda d: d["rank"] == 2),
    ({"rank": {"$in": [0, 3]}, "status": "ERROR"}, lambda d: d["rank"] in (0, 3) and d["status"] == "ERROR"),
    ({"rank": {"$gte": 1, "$lt": 3}}, lambda d: 1 <= d["rank"] < 3),
    ({"rank": {"$ne": 1}}, lambda d: d["rank"] != 1),
    ({"rank": {"$nin": [1, 2]}}, lambda d: d["rank"] not in (1, 2)),
    ({"workflow_id": f"{WF[1]:016x}"}, lambda d: d["workflow_id"] == f"{WF[1]:016x}"),
    ({"started_at": {"$gte": t_sec(30), "$lt": t_sec(33)}},
     lambda d: t_sec(30) <= d["started_at"] < t_sec(33)),
    ({"ended_at": {"$lte": t_sec(5)}}, lambda d: d["ended_at"] <= t_sec(5)),
    ({"$or": [{"activity_id": "io", "rank": 1}, {"tags": {"$in": ["t3"]}}]},
     lambda d: (d["activity_id"] == "io" and d["rank"] == 1) or "t3" in d.get("tags", [])),
    ({"tags": {"$in": ["even"]}, "rank": 0}, lambda d: "even" in d.get("tags", []) and d["rank"] == 0),
    ({"tags": "odd"}, lambda d: "odd" in d.get("tags", [])),
    ({"parent_task_id": None}, lambda d: d["parent_task_id"] is None),
    ({"parent_task_id": {"$ne": None}, "activity_id": {"$in": ["step", "init"]}},
     lambda d: d["parent_task_id"] is not None and d["activity_id"] in ("step", "init")),
    ({"hostname": "n1", "status": {"$ne": "FINISHED"}},
     lambda d: d["hostname"] == "n1" and d["status"] != "FINISHED"),
    ({"$and": [{"used.seq": {"$gt": 50}}, {"generated.v": {"$lt": 2}}]},
     lambda d: d["used"]["seq"] > 50 and d["generated"]["v"] < 2),
    ({"$nor": [{"rank": 0}, {"activity_id": "io"}]}, lambda d: d["rank"] != 0 and d["activity_id"] != "io"),
    ({"activity_id": {"$regex": "^(ex|re)"}}, lambda d: d["activity_id"].startswith(("ex", "re"))),
    ({"tags": {"$exists": True}}, lambda d: "tags" in d),
    ({"rank": "2"}, lambda d: False),                          # type mismatch never matches
    ({"task_id": "nonsense"}, lambda d: False),
]


@pytest.mark.parametrize("filt,pred", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_filters_match_brute_force(store, everything, filt, pred):
    want = [d for d in everything if pred(d)]
    got = query(store, filter=filt)
    assert _ids(got) == _ids(want)
    assert len(got) == last_stats["returned"]


def test_keyword_arguments_and_task_ids(store, everything):
    some = everything[17]
    (got,) = query(store, task_id=some["task_id"])
    assert got == some
    assert last_stats["batches_read"] == 1            # the task-id range picks one batch
    wf = int(everything[0]["workflow_id"], 16)
    got = query(store, workflow=wf, activity=["diffuse", "io"], rank=[2, 3],
                start=t_sec(10), end=t_sec(40))
    want = [d for d in everything if d["workflow_id"] == f"{wf:016x}"
            and d["activity_id"] in ("diffuse", "io") and d["rank"] in (2, 3)
            and d["started_at"] >= t_sec(10) and d["ended_at"] <= t_sec(40)]
    assert _ids(got) == _ids(want) and want


def test_selective_query_reads_fewer_batches(store):
    stats_full, stats_sel = {}, {}
    full = query(store, stats=stats_full)
    sel = query(store, filter={"started_at": {"$gte": t_sec(20), "$lt": t_sec(22)}, "rank": 0},
                stats=stats_sel)
    assert stats_full["batches_total"] == stats_sel["batches_total"] == 60
    assert stats_full["batches_read"] == 60 and len(full) == 2400
    assert stats_sel["batches_read"] == 1 and len(sel) == 40     # seq 20 only (rank 0)
    assert stats_sel["records_decoded"] == 40
    query(store, activity="no-such-activity")
    assert last_stats["batches_read"] == 0


def test_limit(store):
    assert len(query(store, filter={"rank": 1}, limit=7)) == 7


def test_bad_operator_is_a_clear_error(store):
    with pytest.raises(ValueError, match=r"\$foo"):
        query(store, filter={"rank": {"$foo": 1}})


_fields = st.sampled_from(["rank", "activity_id", "status", "started_at", "workflow_id", "tags",
                           "hostname"])


def _value(field):
    return {
        "rank": st.integers(-1, 4),
        "activity_id": st.sampled_from(ACTIVITIES + ["zzz"]),
        "status": st.sampled_from(["FINISHED", "ERROR", "RUNNING"]),
        "started_at": st.integers(0, 60).map(t_sec),
        "workflow_id": st.sampled_from([f"{w:016x}" for w in WF] + ["0" * 16]),
        "tags": st.sampled_from(["even", "odd", "t0", "t1", "t2", "t3"]),
        "hostname": st.sampled_from(["n0", "n1", "n2"]),
    }[field]


@st.composite
def _leaf(draw):
    field = draw(_fields)
    op = draw(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]))
    if op in ("$in", "$nin"):
        arg = draw(st.lists(_value(field), min_size=1, max_size=3))
    else:
        arg = draw(_value(field))
    return {field: {op: arg}}


_filters = st.recursive(_leaf(), lambda ch: st.one_of(
    st.lists(ch, min_size=1, max_size=3).map(lambda xs: {"$and": xs}),
    st.lists(ch, min_size=1, max_size=3).map(lambda xs: {"$or": xs})), max_leaves=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filt=_filters)
def test_pruning_never_changes_the_answer(store, everything, filt):
    """Random filters: index + numpy prefilter give exactly the dict matcher's answer on all records."""
    want = [d for d in everything if matches(d, filt)]
    assert _ids(query(store, filter=filt)) == _ids(want)
