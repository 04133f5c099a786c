"""Pages, streams and exports written from the columns (flowcept.query.documents.json_text):
the service's page bodies are the bytes FastAPI's JSONResponse wrote for ``Access.tasks``,
JSON lines (``flowcept query --all --format jsonl``, /api/v1/tasks/stream) the bytes of
``dumps_lines`` of the documents -- over a store and an archive of hostile payloads.  A first
page does not count every match (``total`` only when known, or with ``count=true``), reads
only the blocks it needs, and its cursors page through every match exactly once."""
import json
import os
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest

from access_support import CLI, clean_env, http, start_server, stop
from flowcept.access.core import Access
from flowcept.query import engine
from flowcept.query.documents import dumps_lines
from support.hostile_payloads import hostile_frame

FILTERS = [{}, {"status": "ERROR"}, {"rank": {"$gt": 2 ** 31}}, {"used.k0": {"$exists": True}},
           {"activity_id": "train"}]
PROJECTIONS = [None, "task_id,used,generated", "rank,tags,payload,payload_error", "used.k1,task_id"]
SORTS = [None, "-started_at", "rank,-task_id", "hostname", "used.k0"]


@pytest.fixture(scope="module")
def hostile_sources(tmp_path_factory):
    """A store of batches with hostile payloads (and names carried in payloads) and its archive."""
    from flowcept.native.batch import batch_key
    from flowcept.store.lmdb import LmdbStore
    base = str(tmp_path_factory.mktemp("hostile"))
    run = os.path.join(base, "runs", "hostile")
    st = LmdbStore(os.path.join(run, "store", "node0"))
    try:
        st.put_batches([(batch_key(9, 1 + k % 3, k), hostile_frame(100 + k, storable=True,
                                                                      t0=1_800_000_000_000_000_000 + k * 10**9))
                        for k in range(6)])
    finally:
        st.close()
    h5 = os.path.join(base, "hostile.h5")
    r = subprocess.run([sys.executable, "-m", "flowcept", "compact", run, "-o", h5], capture_output=True,
                       text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr
    return {"run": run, "h5": h5}


def _reference_body(a: Access, **kw) -> bytes:
    return json.dumps(a.tasks(**kw), ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("kind", ["run", "h5"])
def test_page_bodies_are_the_json_response_bytes(hostile_sources, kind):
    a = Access([hostile_sources[kind]], query_timeout=0)
    ref = Access([hostile_sources[kind]], query_timeout=0)
    try:
        for flt in FILTERS:
            for proj in PROJECTIONS:
                for sort in SORTS:
                    kw = dict(filter=flt, projection=proj, sort=sort, limit=37, count=True)
                    body = a.tasks_json(**kw)
                    assert body == _reference_body(ref, **kw), (flt, proj, sort)
                    cursor = json.loads(body)["next_cursor"]
                    if cursor:   # the second page too
                        kw["cursor"] = cursor
                        assert a.tasks_json(**kw) == _reference_body(ref, **kw)
    finally:
        a.close()
        ref.close()


@pytest.mark.parametrize("kind", ["run", "h5"])
def test_json_lines_are_dumps_lines_of_the_documents(hostile_sources, kind):
    a = Access([hostile_sources[kind]], query_timeout=0)
    try:
        for flt in FILTERS[:3]:
            for proj in PROJECTIONS:
                for sort in SORTS:
                    got = b"".join(a.iter_json(None, flt, proj, sort, None, max_stream=None))
                    want = b"".join(dumps_lines(p) for p in a.iter_pages(None, flt, proj, sort, None,
                                                                           max_stream=None))
                    assert got == want, (flt, proj, sort)
    finally:
        a.close()


def test_cli_and_service_write_the_same_bytes(hostile_sources):
    spec = hostile_sources["run"]
    a = Access([spec], query_timeout=0)
    try:
        want = b"".join(dumps_lines(p) for p in a.iter_pages(max_stream=None))
        ref_page = _reference_body(a, limit=50, filter={"status": "ERROR"}, count=True)
    finally:
        a.close()
    out = subprocess.run(CLI + ["query", spec, "--all", "--format", "jsonl", "--query-timeout", "0"],
                         capture_output=True, timeout=120, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == want
    proc, base = start_server([spec])
    try:
        status, _h, body = http("GET", base + "/api/v1/tasks/stream?limit=1000000")
        assert status == 200 and body == want
        status, _h, body = http("GET", base + "/api/v1/tasks/export?format=jsonl")
        assert status == 200 and body == want
        err = urllib.parse.quote(json.dumps({"status": "ERROR"}))
        q = "limit=50&count=true&filter=" + err
        status, headers, body = http("GET", base + "/api/v1/tasks?" + q)
        assert status == 200 and body == ref_page and headers["content-type"] == "application/json"
        status, _h, body = http("POST", base + "/api/v1/tasks/query",
                                {"filter": {"status": "ERROR"}, "limit": 50, "count": True})
        assert status == 200 and body == ref_page
        status, _h, body = http("GET", base + "/api/v1/tasks/count?filter=" + err)
        assert status == 200 and json.loads(body) == {"source": json.loads(ref_page)["source"],
                                                      "total": json.loads(ref_page)["total"]}
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A job of 200,000 tasks in 49 batches (16 ranks, 1 % errors) and its archive in blocks of
    32,768 rows (chunks of 8,192)."""
    from flowcept.archive.compact import compact
    from support.framegen import build_job_store
    base = str(tmp_path_factory.mktemp("job"))
    run = os.path.join(base, "runs", "job")
    build_job_store(os.path.join(run, "store", "node0"), 200_000, ranks=16, batch_records=4096)
    h5 = os.path.join(base, "job.h5")
    compact(run, h5, progress=False, chunk_rows=8192)
    return {"run": run, "h5": h5, "n": 200_000}


class _Spy:
    """Counts the rows of the blocks a table hands out."""

    def __init__(self, table):
        self.table = table
        self.rows = 0
        self._blocks = table.blocks

    def __enter__(self):
        def blocks(refs, *a, **k):
            for ref, block in self._blocks(refs, *a, **k):
                self.rows += block.n
                yield ref, block
        self.table.blocks = blocks
        return self

    def __exit__(self, *exc):
        self.table.blocks = self._blocks


@pytest.mark.parametrize("kind", ["run", "h5"])
def test_first_page_reads_only_what_it_needs_and_cursors_are_exact(job, kind):
    a = Access([job[kind]], query_timeout=0)
    src = a.source(None)
    try:
        all_docs = [d for p in a.iter_pages(None, {}, "task_id,start_ns,started_at,status,rank", None, None,
                                            max_stream=None) for d in p]
        assert len(all_docs) == job["n"]
        for flt, sort in (({"status": "ERROR"}, None), ({"rank": 3}, None), ({}, "-started_at"),
                          ({"status": "ERROR", "rank": {"$in": [1, 2, 3, 4, 5, 6]}}, "-start_ns,task_id")):
            with _Spy(src.table) as spy:
                first = a.tasks(None, flt, "task_id,start_ns", sort, 100)
            # not every match was counted, and the page read a small part of the job
            assert first["total"] is None and first["next_cursor"]
            assert spy.rows < job["n"] // 2, (flt, sort, spy.rows)
            counted = a.tasks(None, flt, "task_id", sort, 100, count=True)
            from flowcept.query.filters import matches
            want = [d for d in all_docs if matches(d, flt)]
            assert counted["total"] == len(want) == a.count(None, flt)["total"]
            # the count is remembered: the next first page says it without counting
            assert a.tasks(None, flt, "task_id,start_ns", sort, 99)["total"] == len(want)
            # every match exactly once, in order, through the cursors
            from flowcept.query.documents import parse_sort, sort_docs
            ref = sort_docs(list(want), parse_sort(sort))
            got, cur = [], None
            while True:
                page = a.tasks(None, flt, "task_id", sort, 1000, cur)
                got += [d["task_id"] for d in page["items"]]
                cur = page["next_cursor"]
                if not cur:
                    break
            assert got == [d["task_id"] for d in ref], (flt, sort)
        # a deep page reads the blocks after its cursor only
        ids = [d["task_id"] for d in all_docs]
        page = a.tasks(None, {}, "task_id", None, 1000)
        for _ in range(3):
            page = a.tasks(None, {}, "task_id", None, 1000, page["next_cursor"])
        at = ids.index(page["items"][-1]["task_id"]) + 1
        src.table.values   # (touch: spy only the page)
        with _Spy(src.table) as spy:
            nxt = a.tasks(None, {}, "task_id", None, 500, page["next_cursor"])
        assert [d["task_id"] for d in nxt["items"]] == ids[at:at + 500]
        assert spy.rows < job["n"] // 2
        # engine.page_rows says whether matches follow; the last page has no cursor
        last = engine.page_rows(src.table, {"rank": 3}, (("start_ns", -1), ("task_id", 1)), 10 ** 6)
        assert not last.more and last.total == sum(1 for d in all_docs if d["rank"] == 3)
    finally:
        a.close()


@pytest.mark.parametrize("kind", ["run", "h5"])
@pytest.mark.parametrize("payload", ["json", "none"])
def test_parquet_holds_the_documents_columns(hostile_sources, tmp_path, kind, payload):
    """Parquet written from buffers (hex ids, payload JSON written in C) holds exactly the
    values of documents.columns, row for row, nulls included."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from flowcept.access.parquet import write_parquet
    from flowcept.query.documents import DEFAULT_SORT, columns
    a = Access([hostile_sources[kind]], query_timeout=0)
    try:
        table = a.source(None).table
        for cond in (None, {"status": "ERROR"}):
            out = str(tmp_path / f"{kind}-{payload}.parquet")
            n = write_parquet(table, out, payload, cond)
            parts = []
            for blocks, keys in engine.ordered(table, cond, DEFAULT_SORT, chunk=333):
                for i in range(len(keys)):
                    parts.append({k: v[0] for k, v in columns(blocks[int(keys.bid[i])], [int(keys.row[i])],
                                                             payload).items()})
            got = pd.read_parquet(out)
            assert n == len(parts) == len(got) > 0
            want = pd.DataFrame(parts, columns=list(got.columns))
            for c in got.columns:
                g = [None if (isinstance(x, float) and x != x and c not in ("started_at", "ended_at")) else x
                     for x in got[c].tolist()]
                w = [None if (isinstance(x, float) and x != x and c not in ("started_at", "ended_at")) else x
                     for x in want[c].tolist()]
                assert g == w, c
            if payload == "json":
                assert got["used"].notna().any() and got["parent_task_id"].isna().any()
    finally:
        a.close()
