"""A job of a million tasks (16 ranks, 1 % errors, used/generated payloads)
asked the same questions through every way in, over its LMDB store and its
HDF5 archive: the answers are identical, and equal to what the generated
records say.  (MongoDB: tests/query/test_mongodb_read_path.py, a smaller job.)
No timing is asserted here; speed is measured in benchmarks/bench_read.py."""
import json
import subprocess
import sys

import numpy as np
import pytest

from flowcept.access.core import Access
from flowcept.access.tools import call_tool
from flowcept.compat.dbapi import DBAPI
from flowcept.query.search import query
from flowcept.query.tasks import read_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PAGES = [
    ({"status": "ERROR"}, None, 100),
    ({"rank": {"$in": [0, 5]}, "activity_id": "diffuse"}, "-end_ns", 50),
    ({"activity_id": {"$regex": "^res"}, "rank": 2, "status": "ERROR"}, "-rank,activity_id", 20),
    ({"tags": "r3", "rank": 7}, "started_at", 30),
    ({"used.step": {"$in": [1234, 4321]}}, "-start_ns", 100),
    ({"$or": [{"rank": 15, "status": "ERROR"}, {"generated.delta": {"$lt": 0.00001}}]}, None, 100),
]


@pytest.fixture(scope="module")
def both(million_job):
    lm = Access([million_job["run"]], query_timeout=0)
    h5 = Access([million_job["h5"]], query_timeout=0)
    yield lm, h5
    lm.close()
    h5.close()


def test_the_job_is_what_was_written(million_job, both):
    r = read_records(million_job["run"])
    assert len(r) == million_job["n"]
    lm, h5 = both
    for a in (lm, h5):
        assert a.tasks(limit=1, count=True)["total"] == million_job["n"]
    errors = int((r.records["status"] == 1).sum())
    assert 0.008 * million_job["n"] < errors < 0.012 * million_job["n"]
    assert lm.tasks(filter={"status": "ERROR"}, count=True)["total"] == errors


@pytest.mark.parametrize("flt,sort,limit", PAGES, ids=[json.dumps(p[0]) for p in PAGES])
def test_pages_and_cursors_agree(both, flt, sort, limit):
    lm, h5 = both
    a = lm.tasks(filter=flt, sort=sort, limit=limit, count=True)
    b = h5.tasks(filter=flt, sort=sort, limit=limit, count=True)
    assert a["total"] == b["total"] and a["items"] == b["items"]
    assert len(a["items"]) == min(limit, a["total"])
    if a["next_cursor"]:
        a2 = lm.tasks(filter=flt, sort=sort, limit=limit, cursor=a["next_cursor"])
        b2 = h5.tasks(filter=flt, sort=sort, limit=limit, cursor=b["next_cursor"])
        assert a2["items"] == b2["items"] and a2["offset"] == limit
        ids = [d["task_id"] for d in a["items"] + a2["items"]]
        assert len(set(ids)) == len(ids)


def test_streams_agree_with_the_python_reader(million_job, both):
    lm, h5 = both
    for flt in ({"status": "ERROR", "rank": {"$lt": 4}}, {"used.step": 777}):
        want = sorted(query(million_job["run"], filter=flt), key=lambda d: (d["start_ns"], d["task_id"]))
        assert list(lm.iter_tasks(filter=flt, max_stream=None)) == want
        assert list(h5.iter_tasks(filter=flt, max_stream=None)) == want


def test_statistics_on_columns_agree_with_the_records(million_job, both):
    lm, h5 = both
    r = read_records(million_job["run"])
    dur = (r.records["end_ns"].astype(np.int64) - r.records["start_ns"]) / 1e9
    for by in ("activity", "rank", "status", "hostname"):
        sa, sb = lm.stats(by), h5.stats(by)
        assert sa["items"] == sb["items"] and sa["tasks"] == million_job["n"]
    for row in lm.stats("rank")["items"]:
        d = dur[r.records["rank"] == row["rank"]]
        assert row["count"] == len(d)
        assert np.allclose([row["p50_s"], row["p95_s"], row["p99_s"], row["max_s"]],
                           np.percentile(d, [50, 95, 99, 100]), rtol=0, atol=1e-12)
    assert lm.workflow_summary() == {**h5.workflow_summary(), "source": lm.workflow_summary()["source"]}


def test_mcp_tools_agree(both):
    lm, h5 = both
    for name, args in (("find_tasks", {"filter": {"rank": 3, "status": "ERROR"}, "limit": 20}),
                       ("failures", {"filter": {"activity_id": "diffuse"}, "limit": 10}),
                       ("statistics", {"by": "activity", "filter": {"rank": {"$gte": 8}}}),
                       ("workflow_summary", {})):
        x, y = json.loads(call_tool(lm, name, args)), json.loads(call_tool(h5, name, args))
        assert "error" not in x, x
        x.pop("source", None), y.pop("source", None)
        assert x == y, name


def test_query_cli_agrees(million_job, both):
    lm, _h5 = both
    flt = {"status": "ERROR", "rank": {"$in": [1, 2]}}
    want = list(lm.iter_tasks(filter=flt, max_stream=None))
    for spec in (million_job["run"], million_job["h5"]):
        r = subprocess.run([sys.executable, "-m", "flowcept.access.cli", "query", spec, "-f",
                            json.dumps(flt), "--all", "--format", "jsonl"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert [json.loads(x) for x in r.stdout.splitlines()] == want


def test_flowcept_db_agrees(million_job):
    flt = {"activity_id": "diffuse", "rank": 3, "status": "ERROR"}
    a = DBAPI([million_job["run"]]).task_query(flt)
    b = DBAPI([million_job["h5"]]).task_query(flt)
    assert a == b and len(a) > 0
    assert all(d["type"] == "task" and d["campaign_id"] == "c1" for d in a)
    assert {d["task_id"] for d in a} == {d["task_id"] for d in query(million_job["run"], filter=flt)}


def test_exports_agree(million_job, tmp_path):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    from flowcept.access.parquet import export_parquet
    from flowcept.access.perfetto import export_perfetto
    # the columns from both sources; the payloads (JSON text) from one, read back by pandas and DuckDB
    pa = export_parquet(million_job["run"], str(tmp_path / "lm.parquet"), payload="none", progress=False)
    pb = export_parquet(million_job["h5"], str(tmp_path / "h5.parquet"), payload="none", progress=False)
    da, db = pd.read_parquet(pa), pd.read_parquet(pb)
    assert len(da) == million_job["n"]
    pd.testing.assert_frame_equal(da, db)
    pj = export_parquet(million_job["h5"], str(tmp_path / "h5json.parquet"), progress=False)
    dj = pd.read_parquet(pj)
    pd.testing.assert_frame_equal(dj[list(db.columns)], db)
    dd = duckdb.sql(f"SELECT * FROM '{pj}'").df()

    def values(df):   # the same values whatever the reader's dtypes for text and nulls
        return df.astype(object).where(df.notna(), None)
    pd.testing.assert_frame_equal(values(dd), values(dj), check_dtype=False)
    assert list(dd.columns) == list(dj.columns)
    errors = duckdb.sql(f"SELECT count(*) AS n FROM '{pa}' WHERE status = 'ERROR'").df()["n"][0]
    assert errors == Access([million_job["h5"]]).count(filter={"status": "ERROR"})["total"]
    some = dj[dj["rank"] == 5].head(50)
    want = Access([million_job["run"]]).tasks(filter={"rank": 5}, limit=50)["items"]
    assert [json.loads(u) for u in some["used"]] == [d["used"] for d in want]
    ta = export_perfetto(million_job["run"], str(tmp_path / "lm.json"), progress=False)
    tb = export_perfetto(million_job["h5"], str(tmp_path / "h5.json"), progress=False)
    with open(ta, "rb") as f1, open(tb, "rb") as f2:
        assert f1.read() == f2.read()
