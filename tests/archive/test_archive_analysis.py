"""Queries (vs a brute-force filter, Hypothesis), lineage, PROV-JSON, statistics,
report pictures and the CLI, on a real MPI run plus a captured pipeline."""
import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowcept.archive as fa
from flowcept.cli import main as cli_main
from flowcept.record.layout import STATUS_NAMES

from archive_helpers import run_heat2d

HERE = os.path.dirname(os.path.abspath(__file__))
STATUS_CODES = {v: k for k, v in STATUS_NAMES.items()}
pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    base = tmp_path_factory.mktemp("analysis")
    run_dir = run_heat2d(str(base), ranks=3, steps=12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.update(FLOWCEPT_RUN_DIR=run_dir, FLOWCEPT_SHM_DIR=str(base / "shm"), DUMP_BUFFER="false")
    subprocess.run([sys.executable, os.path.join(HERE, "pipeline_app.py")], check=True, timeout=60, env=env)
    out = str(base / "both.h5")
    rep = fa.compact(run_dir, out)
    a = fa.open(out)
    docs = [a.task(i) for i in range(len(a))]
    yield a, docs, rep, str(base)
    a.close()


def by_activity(docs, name):
    return [d for d in docs if d["activity_id"] == name]


def test_two_jobs_one_archive(arch):
    a, docs, rep, _ = arch
    assert len(a.jobs) == 2 and len(rep.stores) == 2 and len(a.workflows) == 2
    assert {d["name"] for d in a.workflows.values()} == {"heat2d", "pipeline"}


# -- queries -------------------------------------------------------------------------------

MISSING = object()


def bf_value(doc, key):
    if key == "status":
        return STATUS_CODES[doc["status"]]
    if key in ("activity", "activity_id"):
        return doc["activity_id"]
    if key in ("node", "hostname"):
        return doc["hostname"]
    if key == "duration":
        return (doc["end_ns"] - doc["start_ns"]) / 1e9
    root = key.split(".")[0]
    if root in ("tags", "used", "generated", "custom_metadata"):
        v = doc
        for part in key.split("."):
            v = v.get(part, MISSING) if isinstance(v, dict) else MISSING
        return v
    return doc[key]


def kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if isinstance(v, str):
        return "str"
    return type(v).__name__


def bf_eq(v, x):
    if v is MISSING:
        return x is None
    if isinstance(v, list):
        return v == x or any(bf_eq(e, x) for e in v)
    if v is None or x is None:
        return v is None and x is None
    return kind(v) == kind(x) and v == x


def bf_op(v, op, x):
    if op == "$eq":
        return bf_eq(v, x)
    if op == "$ne":
        return not bf_eq(v, x)
    if op == "$in":
        return any(bf_eq(v, e) for e in x)
    if op == "$nin":
        return not any(bf_eq(v, e) for e in x)
    if v is MISSING or v is None:
        return False
    if isinstance(v, list):
        return any(bf_op(e, op, x) for e in v)
    if kind(v) != kind(x) or kind(v) == "bool":
        return False
    return {"$gt": v > x, "$gte": v >= x, "$lt": v < x, "$lte": v <= x}[op]


def bf_match(doc, flt):
    for key, cond in flt.items():
        if key == "$and":
            ok = all(bf_match(doc, f) for f in cond)
        elif key == "$or":
            ok = any(bf_match(doc, f) for f in cond)
        else:
            ops = cond if isinstance(cond, dict) else {"$eq": cond}
            v = bf_value(doc, key)
            ok = True
            for op, x in ops.items():
                if key == "status":
                    x = [STATUS_CODES.get(e, e) for e in x] if op in ("$in", "$nin") else STATUS_CODES.get(x, x)
                ok = ok and bf_op(v, op, x)
        if not ok:
            return False
    return True


def field_values(docs):
    pick = lambda key: sorted({d[key] for d in docs if d.get(key) is not None} - {None})
    starts = [d["started_at"] for d in docs]
    return {
        "rank": list(range(-1, 5)),
        "thread_id": sorted({d["thread_id"] for d in docs}),
        "status": ["FINISHED", "ERROR", "RUNNING", 0, 1, 2],
        "activity_id": pick("activity_id") + ["zzz", "a"],
        "activity": pick("activity_id"),
        "hostname": pick("hostname") + ["elsewhere"],
        "started_at": starts[::7] + [min(starts) - 1, max(starts) + 1],
        "ended_at": [d["ended_at"] for d in docs][::9],
        "start_ns": [d["start_ns"] for d in docs][::5],
        "end_ns": [d["end_ns"] for d in docs][::5],
        "duration": [0.0, 1e-5, 1e-4, 1e-3, 0.01],
        "task_id": [d["task_id"] for d in docs][::4],
        "parent_task_id": pick("parent_task_id")[::2] + [None],
        "workflow_id": pick("workflow_id"),
        "tags": ["io", "ml", "eval", "prep", "nope"],
        "used.step": list(range(-1, 14)),
        "used.path": ["/data/a.csv", "/data/b.csv", "x"],
        "generated.return": ["/data/a.csv", 0.9, "model-a.csv.clean"],
        "custom_metadata.gpu": [False, True, None],
    }


def filters(values):
    fields = sorted(values)

    @st.composite
    def term(draw):
        key = draw(st.sampled_from(fields))
        vals = st.sampled_from(values[key])
        op = draw(st.sampled_from(["plain", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "two"]))
        if op == "plain":
            return {key: draw(vals)}
        if op in ("$in", "$nin"):
            return {key: {op: draw(st.lists(vals, min_size=0, max_size=3))}}
        if op == "two":
            lo, hi = draw(vals), draw(vals)
            if key in ("parent_task_id", "custom_metadata.gpu") and (lo is None or hi is None):
                return {key: {"$ne": lo}}
            return {key: {"$gte": lo, "$lte": hi}}
        x = draw(vals)
        if x is None and op not in ("$eq", "$ne"):
            op = "$eq"
        return {key: {op: x}}

    def merge(ts):
        out = {}
        for t in ts:
            out.update(t)
        return out

    base = st.lists(term(), min_size=1, max_size=3).map(merge)
    return st.recursive(base, lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda l: {"$and": l}),
        st.lists(inner, min_size=1, max_size=3).map(lambda l: {"$or": l}),
        st.tuples(base, st.lists(inner, min_size=1, max_size=2)).map(lambda t: {**t[0], "$or": t[1]})),
        max_leaves=6)


def test_query_matches_brute_force(arch):
    a, docs, _, _ = arch
    values = field_values(docs)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(filters(values))
    def check(flt):
        got = a.query(filter=flt).indices.tolist()
        want = [i for i, d in enumerate(docs) if bf_match(d, flt)]
        assert got == want, flt

    check()


def test_query_keywords_and_time_range(arch):
    a, docs, _, _ = arch
    sel = a.query(activity="diffuse", rank=[0, 2])
    assert sel.indices.tolist() == [i for i, d in enumerate(docs)
                                    if d["activity_id"] == "diffuse" and d["rank"] in (0, 2)]
    assert all(t["activity_id"] == "diffuse" for t in sel)
    assert len(sel.tasks) == len(sel) and set(sel.tasks["activity"]) == {"diffuse"}
    assert a.query(status="ERROR").indices.tolist() == a.failed().indices.tolist()
    assert [d["activity_id"] for d in a.query(tag="eval")] == ["evaluate"] * 3
    assert len(a.query(tag=["io", "prep"])) == 6
    assert len(a.query(node=docs[0]["hostname"])) == len(a)
    starts = sorted(d["started_at"] for d in docs)
    # bounds between two tasks, so that datetime's microsecond rounding
    # cannot move a task across them
    # (tasks can start within a microsecond of each other: pick gaps wider than that)
    i1 = next(i for i in range(9, len(starts) - 1) if starts[i + 1] - starts[i] > 4e-6)
    i2 = next(i for i in range(max(49, i1 + 1), len(starts) - 1) if starts[i + 1] - starts[i] > 4e-6)
    t1, t2 = (starts[i1] + starts[i1 + 1]) / 2, (starts[i2] + starts[i2 + 1]) / 2
    want = [i for i, d in enumerate(docs) if t1 <= d["started_at"] < t2]
    assert a.query(start=t1, end=t2).indices.tolist() == want
    assert a.query(start=datetime.fromtimestamp(t1), end=t2).indices.tolist() == want
    # selections narrow further
    assert a.query(activity="diffuse").query(rank=0).indices.tolist() == \
        a.query(activity="diffuse", rank=0).indices.tolist()
    with pytest.raises(ValueError, match="unknown operator"):
        a.query(filter={"rank": {"$regex": "x"}})
    with pytest.raises(ValueError, match="unknown field"):
        a.query(filter={"nosuchfield": 1})
    with pytest.raises(ValueError, match="unknown status"):
        a.query(status="DONE")


def test_task_payload_accessors(arch):
    a, docs, _, _ = arch
    (i,) = [k for k, d in enumerate(docs) if d["activity_id"] == "make" and d["used"] == {"name": "b"}]
    t = a.task(i)
    assert a.task(t["task_id"]) == t and a.used(t["task_id"]) == {"name": "b"}
    assert a.generated(i) == {"return": "/data/b.csv"} and a.payload(i)["tags"] == ["io", "input"]
    with pytest.raises(KeyError):
        a.task("0000000000000001-0000000000000002")


def test_to_pandas_or_clear_error(arch):
    a, docs, _, _ = arch
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            a.to_pandas()
        return
    from flowcept.query.documents import PAYLOAD_COLUMNS, TABLE_FIELDS
    df = a.to_pandas()
    # the documents' field names and values: one set of column names everywhere
    assert list(df.columns) == list(TABLE_FIELDS) + list(PAYLOAD_COLUMNS)
    assert len(df) == len(a) and list(df["task_id"]) == [d["task_id"] for d in docs]
    def values(col):   # pandas shows an absent string as NaN
        return [None if isinstance(v, float) and v != v else v for v in df[col].tolist()]
    for col in TABLE_FIELDS + PAYLOAD_COLUMNS:
        assert values(col) == [d.get(col) for d in docs], col
    assert list(a.query(activity="make").to_pandas()["activity_id"]) == ["make"] * 3
    assert list(a.to_pandas(payload=False).columns) == list(TABLE_FIELDS)


# -- lineage ---------------------------------------------------------------------------------

def test_lineage_parents_and_data(arch):
    a, docs, _, _ = arch
    ids = {(d["activity_id"], json.dumps(d.get("used"), sort_keys=True)): d["task_id"] for d in docs}
    make_a = ids[("make", '{"name": "a"}')]
    clean_a = ids[("clean", '{"path": "/data/a.csv"}')]
    # used holds the defaults too, as Flowcept records them
    train_a = ids[("train", '{"optimizer": "sgd", "path": "/data/a.csv.clean"}')]
    eval_a = ids[("evaluate", '{"metric": "auc", "model": "model-a.csv.clean"}')]
    report = [d["task_id"] for d in docs if d["activity_id"] == "report"][0]
    pipe_a = a.task(make_a)["parent_task_id"]
    desc = set(a.descendants(make_a).task_ids())
    assert {clean_a, train_a, eval_a, report} <= desc
    assert not any(a.task(t)["activity_id"] == "pipeline" for t in desc)
    anc = set(a.ancestors(eval_a).task_ids())
    assert {train_a, clean_a, make_a, pipe_a} <= anc
    assert not any(a.task(t)["used"] == {"name": "b"} for t in anc)
    # parent links only / data only
    assert set(a.ancestors(eval_a, data=False).task_ids()) == {pipe_a}
    assert pipe_a not in set(a.ancestors(eval_a, parents=False).task_ids())
    kids = set(a.descendants(pipe_a, data=False).task_ids())
    assert {make_a, clean_a, train_a, eval_a} == kids
    # heat2d: a timestep's children are its descendants, its ancestors include nothing of another rank's children
    ts = a.query(activity="timestep", rank=0)[3]
    kid_acts = sorted(a.task(t)["activity_id"] for t in a.descendants(ts["task_id"], data=False).task_ids())
    assert kid_acts[:2] == ["diffuse", "exchange_halos"]


# -- PROV-JSON -------------------------------------------------------------------------------

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RELATIONS = {  # PROV-JSON relation: (required id-valued keys -> record kind, optional id keys, time keys)
    "used": ({"prov:activity": "activity"}, {"prov:entity": "entity"}, ["prov:time"]),
    "wasGeneratedBy": ({"prov:entity": "entity"}, {"prov:activity": "activity"}, ["prov:time"]),
    "wasInformedBy": ({"prov:informed": "activity", "prov:informant": "activity"}, {}, []),
    "wasStartedBy": ({"prov:activity": "activity"}, {"prov:trigger": "entity", "prov:starter": "activity"}, ["prov:time"]),
    "wasAssociatedWith": ({"prov:activity": "activity"}, {"prov:agent": "agent", "prov:plan": "entity"}, []),
    "wasAttributedTo": ({"prov:entity": "entity", "prov:agent": "agent"}, {}, []),
    "actedOnBehalfOf": ({"prov:delegate": "agent", "prov:responsible": "agent"}, {"prov:activity": "activity"}, []),
}
QNAME = re.compile(r"^[A-Za-z_][\w.-]*:[^\s]*$")


def validate_prov_json(doc):
    """Structural check per the W3C PROV-JSON submission (section 2-3)."""
    allowed = {"prefix", "entity", "activity", "agent", "bundle"} | set(RELATIONS) | {
        "wasInvalidatedBy", "wasEndedBy", "wasDerivedFrom", "wasInfluencedBy", "specializationOf",
        "alternateOf", "hadMember"}
    assert set(doc) <= allowed, set(doc) - allowed
    prefixes = doc.get("prefix", {})
    assert all(isinstance(k, str) and isinstance(v, str) and v.startswith("http") for k, v in prefixes.items())
    known = set(prefixes) | {"prov", "xsd"}

    def check_qname(q):
        assert isinstance(q, str) and QNAME.match(q), q
        assert q.split(":", 1)[0] in known, f"undeclared prefix in {q}"

    def check_attrs(body):
        assert isinstance(body, dict)
        for k, v in body.items():
            check_qname(k)
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                if isinstance(x, dict):   # typed literal
                    assert set(x) <= {"$", "type", "lang"} and "$" in x, x
                else:
                    assert isinstance(x, (str, int, float, bool)), (k, x)

    for kind in ("entity", "activity", "agent"):
        for qid, body in doc.get(kind, {}).items():
            check_qname(qid)
            check_attrs(body)
    for qid, body in doc.get("activity", {}).items():
        for k in ("prov:startTime", "prov:endTime"):
            if k in body:
                assert ISO.match(body[k]), body[k]
                datetime.fromisoformat(body[k])
        if "prov:startTime" in body and "prov:endTime" in body:
            assert datetime.fromisoformat(body["prov:startTime"]) <= datetime.fromisoformat(body["prov:endTime"])
    for rel, (required, optional, times) in RELATIONS.items():
        for rid, body in doc.get(rel, {}).items():
            assert rid.startswith("_:") or QNAME.match(rid)
            for k, target in required.items():
                assert k in body, (rel, k)
            for k, target in {**required, **optional}.items():
                if k in body:
                    assert body[k] in doc.get(target, {}), f"{rel}.{k} -> {body[k]} is not an {target}"
            for k in times:
                if k in body:
                    assert ISO.match(body[k]), body[k]
            check_attrs({k: v for k, v in body.items()})
    json.dumps(doc)   # serialisable


def test_prov_json_export_is_valid(arch):
    a, docs, _, _ = arch
    doc = a.to_prov()
    validate_prov_json(doc)
    assert len(doc["activity"]) == len(a)
    make_a = [d for d in docs if d["activity_id"] == "make" and d["used"] == {"name": "a"}][0]
    clean_a = [d for d in docs if d["activity_id"] == "clean" and d["used"] == {"path": "/data/a.csv"}][0]
    q = lambda t: f"flowcept:task/{t['task_id']}"
    assert any(r["prov:informed"] == q(clean_a) and r["prov:informant"] == q(make_a)
               for r in doc["wasInformedBy"].values())
    gen = [r["prov:entity"] for r in doc["wasGeneratedBy"].values() if r["prov:activity"] == q(make_a)]
    assert any(r["prov:activity"] == q(clean_a) and r["prov:entity"] in gen for r in doc["used"].values())
    assert any(r["prov:activity"] == q(make_a) and r["prov:starter"] == f"flowcept:task/{make_a['parent_task_id']}"
               for r in doc["wasStartedBy"].values())
    agents = doc["agent"]
    assert "flowcept:user/root" in agents or any(k.startswith("flowcept:user/") for k in agents)
    # one workflow, a subset of tasks
    pipe = [w for w, d in a.workflows.items() if d["name"] == "pipeline"][0]
    sub = a.to_prov(workflow=pipe)
    validate_prov_json(sub)
    assert len(sub["activity"]) == sum(1 for d in docs if d["workflow_id"] == pipe)
    few = a.to_prov(tasks=a.query(activity="train"))
    validate_prov_json(few)
    assert len(few["activity"]) == 3


# -- statistics ------------------------------------------------------------------------------

def test_statistics_match_numpy(arch):
    a, docs, _, _ = arch
    s = a.stats()
    names = sorted({d["activity_id"] for d in docs})
    assert list(s["activity"]) == names
    for row in s:
        d = np.array([(x["end_ns"] - x["start_ns"]) / 1e9 for x in docs if x["activity_id"] == row["activity"]])
        assert row["count"] == len(d)
        assert math.isclose(row["mean_s"], d.mean(), rel_tol=1e-9)
        assert math.isclose(row["p95_s"], np.percentile(d, 95), rel_tol=1e-9)
        assert math.isclose(row["max_s"], d.max(), rel_tol=1e-12)
    assert s[s["activity"] == "evaluate"]["errors"][0] == 1
    load = a.rank_load()
    busy = {}
    for d in docs:
        if d["parent_task_id"] is None:
            busy[d["rank"]] = busy.get(d["rank"], 0) + (d["end_ns"] - d["start_ns"]) / 1e9
    assert load["rank"].tolist() == sorted(busy)
    assert np.allclose(load["busy_s"], [busy[r] for r in sorted(busy)])
    assert math.isclose(load["imbalance"], max(busy.values()) / np.mean(list(busy.values())))
    tp = a.throughput(0.01)
    assert tp["count"].sum() == len(a) and np.allclose(tp["per_s"], tp["count"] / 0.01)
    slow = a.slowest(5)
    durs = sorted(((d["end_ns"] - d["start_ns"]) for d in docs), reverse=True)[:5]
    assert [t["end_ns"] - t["start_ns"] for t in slow] == durs
    failed = a.failed()
    assert [t["activity_id"] for t in failed] == ["evaluate"]
    assert failed[0]["error"]["type"] == "builtins.ValueError"


# -- report and CLI --------------------------------------------------------------------------

def test_report_writes_one_html_page(arch, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a, _, _, _ = arch
    rc = cli_main(["report", a.path, "-o", str(tmp_path / "rep.html")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "diffuse" in out and "load imbalance" in out and "failed tasks (1)" in out
    page = (tmp_path / "rep.html").read_text()
    assert page.count("src='data:image/png;base64,") == 4 and "Slowest chain" in page


def test_cli_compact_and_errors(arch, tmp_path, capsys):
    _a, _, _, base = arch
    out = tmp_path / "cli.h5"
    assert cli_main(["compact", os.path.join(base, "runs"), "-o", str(out), "--no-progress"]) == 0
    assert "task records" in capsys.readouterr().out
    assert cli_main(["compact", os.path.join(base, "runs"), "-o", str(out), "--append"]) == 0
    assert "(0 new" in capsys.readouterr().out
    assert cli_main(["compact", os.path.join(base, "runs"), "-o", str(out), "--no-append"]) == 2
    assert "exists" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert cli_main(["report", str(bad)]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err
    res = subprocess.run([sys.executable, "-m", "flowcept", "compact", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "--recover" in res.stdout and "--append" in res.stdout
