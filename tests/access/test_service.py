"""The query service over real HTTP: same answers over LMDB and HDF5, pagination,
streaming, lineage, statistics, PROV, OpenAPI, and 4xx (never 500) on bad requests."""
import json
import os
import subprocess
import urllib.parse

import pytest

from access_support import CLI, clean_env, free_port, get_json, http, start_server, stop
from questions import QUESTIONS, SORTS

pytestmark = pytest.mark.timeout(300)


def q(d):
    return urllib.parse.quote(json.dumps(d))


def tasks(base, source, flt, sort=None, limit=10_000, projection=None):
    url = f"{base}/api/v1/tasks?source={source}&filter={q(flt)}&limit={limit}"
    if sort:
        url += f"&sort={urllib.parse.quote(sort)}"
    if projection:
        url += f"&projection={projection}"
    status, doc = get_json(url)
    assert status == 200, doc
    return doc


def test_sources_and_health(service):
    status, doc = get_json(service + "/health")
    assert status == 200 and doc["status"] == "ok" and sorted(doc["sources"]) == ["run", "runs"]
    status, doc = get_json(service + "/api/v1/sources")
    kinds = {s["name"]: s["kind"] for s in doc["items"]}
    assert kinds == {"runs": "store", "run": "archive"}


@pytest.mark.parametrize("flt", QUESTIONS, ids=[json.dumps(x) for x in QUESTIONS])
def test_same_answers_store_and_archive(service, flt):
    for sort in SORTS:
        a = tasks(service, "runs", flt, sort)
        b = tasks(service, "run", flt, sort)
        assert a["total"] == b["total"]
        assert a["items"] == b["items"]
    assert a["total"] > 0 or flt == {"used.model": "nothing"}


def test_question_answers_are_right(service):
    assert tasks(service, "run", {})["total"] == 148
    err = tasks(service, "run", {"status": "ERROR"})["items"]
    assert [d["activity_id"] for d in err] == ["evaluate"]
    assert err[0]["used"] == {"model": "model-b.csv.clean", "metric": "auc"}   # defaults too
    assert err[0]["error"]["message"] == "cannot evaluate model-b.csv.clean"
    ranks = {d["rank"] for d in tasks(service, "runs", {"rank": {"$in": [1, 2]}})["items"]}
    assert ranks == {1, 2}


def test_projection_sort_and_cursor_pages(service):
    full = tasks(service, "runs", {}, "-rank,activity_id", projection="task_id,rank,activity_id")
    assert all(set(d) <= {"task_id", "rank", "activity_id"} for d in full["items"])
    ranks = [d["rank"] for d in full["items"]]
    assert ranks == sorted(ranks, reverse=True)
    seen, cursor = [], None
    while True:
        url = f"{service}/api/v1/tasks?source=runs&sort=-rank,activity_id&limit=37&projection=task_id"
        if cursor:
            url += f"&cursor={cursor}"
        status, page = get_json(url)
        assert status == 200
        seen += [d["task_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [d["task_id"] for d in full["items"]] and len(set(seen)) == len(seen)


def test_post_query_equals_get(service):
    body = {"source": "run", "filter": {"tags": "ml"}, "projection": ["task_id", "tags"],
            "sort": "-start_ns", "limit": 4}
    status, _h, raw = http("POST", service + "/api/v1/tasks/query", body)
    assert status == 200
    got = json.loads(raw)
    assert got["items"] == tasks(service, "run", {"tags": "ml"}, "-start_ns", 4, "task_id,tags")["items"]


def test_stream_is_json_lines(service):
    status, headers, raw = http("GET", f"{service}/api/v1/tasks/stream?source=runs&projection=task_id")
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    lines = raw.decode().splitlines()
    assert len(lines) == 148
    assert [json.loads(x)["task_id"] for x in lines] == \
        [d["task_id"] for d in tasks(service, "runs", {}, projection="task_id")["items"]]


def test_task_lineage_workflows_stats(service):
    err = tasks(service, "run", {"status": "ERROR"})["items"][0]
    for src in ("runs", "run"):
        status, doc = get_json(f"{service}/api/v1/tasks/{err['task_id']}?source={src}")
        assert status == 200 and doc == err
    anc = {}
    for src in ("runs", "run"):
        status, anc[src] = get_json(f"{service}/api/v1/tasks/{err['task_id']}/ancestors?source={src}")
        assert status == 200
    assert anc["runs"]["items"] == anc["run"]["items"]
    assert [d["activity_id"] for d in anc["run"]["items"]] == ["pipeline", "make", "clean", "train"]
    make = tasks(service, "run", {"activity_id": "make"}, limit=1)["items"][0]
    status, desc = get_json(f"{service}/api/v1/tasks/{make['task_id']}/descendants?source=runs")
    assert {d["activity_id"] for d in desc["items"]} >= {"clean", "train", "evaluate"}
    wf = {s: get_json(f"{service}/api/v1/workflows?source={s}")[1] for s in ("runs", "run")}
    assert wf["runs"]["items"] == wf["run"]["items"] and wf["run"]["count"] == 2
    for by in ("activity", "rank", "status"):
        a = get_json(f"{service}/api/v1/stats?source=runs&by={by}")[1]
        b = get_json(f"{service}/api/v1/stats?source=run&by={by}")[1]
        assert a["items"] == b["items"]
    st = get_json(f"{service}/api/v1/stats?source=run&by=activity")[1]
    ev = [r for r in st["items"] if r["activity"] == "evaluate"][0]
    assert ev["count"] == 3 and ev["errors"] == 1
    s1 = get_json(f"{service}/api/v1/workflows/summary?source=run")[1]
    s2 = get_json(f"{service}/api/v1/workflows/summary?source=runs")[1]
    s1.pop("source"), s2.pop("source")
    assert s1 == s2 and s1["tasks"] == 148 and s1["by_status"]["ERROR"] == 1 and s1["ranks"] == [0, 1, 2, 3]
    fail = get_json(f"{service}/api/v1/failures?source=runs")[1]
    assert [d["task_id"] for d in fail["items"]] == [err["task_id"]]


def test_prov_formats(service):
    from prov.model import ProvDocument
    status, h, raw = http("GET", f"{service}/api/v1/prov?source=run")
    assert status == 200
    doc = ProvDocument.deserialize(content=raw.decode(), format="json")
    assert len(list(doc.get_records())) > 148
    status, h2, raw2 = http("GET", f"{service}/api/v1/prov?source=runs")   # compacted on the fly
    assert status == 200 and json.loads(raw2) == json.loads(raw)
    status, h, provn = http("GET", f"{service}/api/v1/prov?source=run&format=provn")
    assert status == 200 and provn.decode().startswith("document") and "activity(" in provn.decode()
    status, h, ttl = http("GET", f"{service}/api/v1/prov?source=run&format=rdf")
    assert status == 200 and b"prov:" in ttl


def test_openapi_document(service):
    status, doc = get_json(service + "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in ("/api/v1/tasks", "/api/v1/tasks/query", "/api/v1/tasks/stream", "/api/v1/tasks/{task_id}",
                 "/api/v1/tasks/{task_id}/ancestors", "/api/v1/stats", "/api/v1/prov", "/health"):
        assert path in doc["paths"], path


BAD = [
    ("/api/v1/tasks?source=run&filter=%7Bnot%20json", 400, "not valid JSON"),
    ("/api/v1/tasks?source=run&filter=" + q({"rank": {"$near": 1}}), 400, "unknown operator"),
    ("/api/v1/tasks?source=run&filter=" + q({"$where": "1"}), 400, "top-level operator"),
    ("/api/v1/tasks?source=run&filter=" + q([1, 2]), 400, "JSON object"),
    ("/api/v1/tasks?source=run&filter=" + q({"rank": {"$in": 3}}), 400, "takes a list"),
    ("/api/v1/tasks?source=run&filter=" + q({"activity_id": {"$regex": "("}}), 400, "bad pattern"),
    ("/api/v1/tasks?source=run&filter=" + q({"a": {"$regex": "x" * 1000}}), 400, "at most"),
    ("/api/v1/tasks?source=run&limit=100000000", 400, "limit must be between"),
    ("/api/v1/tasks?source=run&limit=0", 400, "limit must be between"),
    ("/api/v1/tasks?source=run&limit=abc", 422, "limit"),
    ("/api/v1/tasks?source=run&sort=rank;drop", 400, "not a field name"),
    ("/api/v1/tasks?source=run&cursor=garbage", 400, "cursor"),
    ("/api/v1/tasks?source=../../etc/passwd", 400, "not a source name"),
    ("/api/v1/tasks?source=..", 400, "not a source name"),
    ("/api/v1/tasks?source=%2Fetc%2Fpasswd", 400, "not a source name"),
    ("/api/v1/tasks?source=nope", 404, "no source"),
    ("/api/v1/tasks", 400, "several sources"),
    ("/api/v1/tasks/zzz?source=run", 400, "not a task id"),
    ("/api/v1/tasks/0000000000000001-0000000000000001?source=run", 404, "no task"),
    ("/api/v1/tasks/0000000000000001-0000000000000001?source=runs", 404, "no task"),
    ("/api/v1/tasks/0000000000000001-0000000000000001/ancestors?source=runs", 404, "no task"),
    ("/api/v1/stats?source=run&by=color", 400, "by is"),
    ("/api/v1/prov?source=run&format=pdf", 400, "format is"),
    ("/api/v1/workflows/summary?source=run&workflow_id=xyz", 400, "workflow id"),
    ("/api/v1/tasks?source=run&filter=" + q({"a": {"b": {"$eq": 1}, "$eq": 1}}), 400, "mixed"),
    ("/api/v1/tasks/..%2F..%2Fetc?source=run", 404, "Not Found"),
    ("/api/v1/nothing", 404, "Not Found"),
]


@pytest.mark.parametrize("path,code,msg", BAD, ids=[b[0][:70] for b in BAD])
def test_bad_requests_are_4xx_with_a_message(service, path, code, msg):
    status, doc = get_json(service + path)
    assert status == code, doc
    assert msg in doc["error"], doc


def test_deep_or_huge_filters_and_bodies(service):
    deep = {"rank": 1}
    for _ in range(12):
        deep = {"$and": [deep]}
    status, doc = get_json(f"{service}/api/v1/tasks?source=run&filter={q(deep)}")
    assert status == 400 and "deeper" in doc["error"]
    status, _h, raw = http("POST", service + "/api/v1/tasks/query", b"x" * (2 << 20))
    assert status == 413
    status, _h, raw = http("POST", service + "/api/v1/tasks/query", {"source": "run", "bogus": 1})
    assert status == 422 and b"bogus" in raw
    status, _h, raw = http("POST", service + "/api/v1/tasks/query", b"{broken")
    assert status == 422


def test_query_time_budget_answers_503(run_data):
    proc, base = start_server([run_data["h5"], "--query-timeout", "0.000001"])
    try:
        status, doc = get_json(base + "/api/v1/tasks")
        assert status == 503 and "longer than" in doc["error"]
        assert get_json(base + "/health")[0] == 200
    finally:
        stop(proc)


def test_bearer_token_and_loopback_default(run_data, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    proc, base = start_server([run_data["h5"], "--token-file", str(tok)])
    try:
        assert get_json(base + "/health")[0] == 200
        status, doc = get_json(base + "/api/v1/tasks?limit=1")
        assert status == 401 and "bearer" in doc["error"]
        status, doc = get_json(base + "/api/v1/tasks?limit=1", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, doc = get_json(base + "/api/v1/tasks?limit=1",
                               headers={"Authorization": "Bearer s3cret-token"})
        assert status == 200 and doc["count"] == 1
    finally:
        stop(proc)
    r = subprocess.run(CLI + ["serve", run_data["h5"], "--host", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 2 and "--token-file" in r.stderr


def test_curl_shell_script(service):
    script = os.path.join(os.path.dirname(__file__), "curl_checks.sh")
    r = subprocess.run(["bash", script, service], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all curl checks passed" in r.stdout


ODD = [{"rank": 10**30}, {"rank": {"$gt": 10**30}}, {"start_ns": {"$lt": 2**70}}, {"task_id": 5},
       {"task_id": {"$gt": "zz"}}, {"workflow_id": 12}, {"workflow_id": {"$in": ["nothex", 3]}}, {"status": 7},
       {"status": {"$gt": "A"}}, {"activity_id": {"$in": [1, None, [2], "make"]}}, {"used": {"$eq": {"a": 1}}},
       {"rank": {"$in": [True]}}, {"parent_task_id": {"$gt": None}}, {"": 1}, {"thread_id": 1.5},
       {"started_at": "yesterday"}, {"tags": {"$regex": "m"}}, {"a.b.c": {"$nin": []}}, {"$or": []},
       {"$and": [1]}, {"rank": {"$regex": 3}}, {"hostname": {"$gte": 1}}, {"task_id": {"$in": ["x-y"]}},
       {"parent_task_id": "bad"}, {"rank": {"$eq": 1, "$ne": 2}}]


def test_odd_filters_answer_200_or_400_and_agree(service):
    for flt in ODD:
        got = {}
        for src in ("runs", "run"):
            status, doc = get_json(f"{service}/api/v1/tasks?source={src}&limit=10000&filter={q(flt)}")
            assert status in (200, 400), (flt, src, status, doc)
            got[src] = (status, doc.get("items") if status == 200 else doc["error"])
        assert got["runs"] == got["run"], flt
