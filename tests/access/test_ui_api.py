"""The routes the browser UI reads (public, like every other route), over real HTTP:
runs, timeline, failure groups, lineage graph, export, capabilities, and the UI's own
static pages; each answer is checked against the plain task queries."""
import csv
import io
import json
import urllib.parse

import pytest

from access_support import get_json, http, start_server, stop

pytestmark = pytest.mark.timeout(300)


def q(d):
    return urllib.parse.quote(json.dumps(d))


def all_tasks(base, source, flt=None, projection=None):
    url = f"{base}/api/v1/tasks?source={source}&limit=10000&filter={q(flt or {})}"
    if projection:
        url += f"&projection={projection}"
    status, doc = get_json(url)
    assert status == 200, doc
    assert doc["next_cursor"] is None
    return doc["items"]


def test_runs_lists_every_workflow_with_its_counts(service):
    status, doc = get_json(f"{service}/api/v1/runs")
    assert status == 200
    # two sources (the store dir and its archive), two workflows each (heat2d and pipeline)
    assert doc["total"] == 4 and {(r["source"], r["kind"]) for r in doc["items"]} == \
        {("runs", "store"), ("run", "archive")}
    for r in doc["items"]:
        tasks = all_tasks(service, r["source"], {"workflow_id": r["workflow_id"]},
                          "task_id,status,rank,start_ns,end_ns")
        assert r["tasks"] == len(tasks) > 0
        assert r["failures"] == sum(t["status"] == "ERROR" for t in tasks)
        assert r["ranks"] == len({t["rank"] for t in tasks})
        assert r["started_at"] == min(t["start_ns"] for t in tasks) / 1e9
        assert r["user"] and r["name"] in ("heat2d", "pipeline")
    by_name = {(r["source"], r["name"]): r for r in doc["items"]}
    assert by_name[("run", "pipeline")]["campaign_id"] == "tests"
    assert by_name[("run", "heat2d")]["ranks"] == 4 and by_name[("run", "pipeline")]["failures"] == 1
    starts = [r["started_at"] for r in doc["items"]]
    assert starts == sorted(starts, reverse=True)   # newest first by default

    status, doc = get_json(f"{service}/api/v1/runs?q=PIPE&sort=source")
    assert [(r["source"], r["name"]) for r in doc["items"]] == [("run", "pipeline"), ("runs", "pipeline")]
    status, doc = get_json(f"{service}/api/v1/runs?sort=-tasks&limit=1&offset=1")
    assert doc["total"] == 4 and doc["count"] == 1 and doc["offset"] == 1
    for bad in ("sort=secret", "limit=0", "offset=-1", "q=" + "x" * 300):
        status, doc = get_json(f"{service}/api/v1/runs?{bad}")
        assert status in (400, 422) and "error" in doc, bad


def _overlap(a0, a1, b0, b1):
    return max(0, min(a1, b1) - max(a0, b0))


def test_timeline_bins_equal_the_tasks_they_summarise(service):
    bins = 37
    status, tl = get_json(f"{service}/api/v1/timeline?source=run&bins={bins}&max_tasks=0")
    assert status == 200 and tl["mode"] == "bins" and tl["bins"] == bins
    tasks = all_tasks(service, "run", None, "rank,start_ns,end_ns,status,activity_id")
    assert tl["tasks"] == len(tasks)
    ranks = sorted({t["rank"] for t in tasks})
    assert [r["label"] for r in tl["rows"]] == [f"rank {r}" for r in ranks]
    t0, t1 = tl["t0_ns"], tl["t1_ns"]
    assert t0 == min(t["start_ns"] for t in tasks) and t1 == max(t["end_ns"] for t in tasks)
    width = (t1 - t0) / bins
    for row, rank in enumerate(ranks):
        mine = [t for t in tasks if t["rank"] == rank]
        for b in range(bins):
            lo, hi = t0 + b * width, t0 + (b + 1) * width
            covered = sum(_overlap(t["start_ns"], t["end_ns"], lo, hi) for t in mine) / width
            assert abs(tl["cells"]["busy"][row][b] - covered * 100) <= 1.0, (rank, b)
            started = [t for t in mine if min((t["start_ns"] - t0) * bins // (t1 - t0), bins - 1) == b]
            assert tl["cells"]["started"][row][b] == len(started), (rank, b)
            assert tl["cells"]["errors"][row][b] == sum(t["status"] == "ERROR" for t in started)
            per_act = {}
            for t in mine:
                per_act[t["activity_id"]] = per_act.get(t["activity_id"], 0) + \
                    _overlap(t["start_ns"], t["end_ns"], lo, hi)
            dom = tl["cells"]["activity"][row][b]
            if not any(per_act.values()):
                assert dom == -1
            else:
                best = max(per_act.values())
                name = tl["activities"][dom]
                assert name == "other" or per_act.get(name, 0) >= best * (1 - 1e-9), (rank, b)
    assert sum(map(sum, tl["cells"]["errors"])) == sum(t["status"] == "ERROR" for t in tasks)

    # the same question of the store gives the same picture
    assert get_json(f"{service}/api/v1/timeline?source=runs&bins={bins}&max_tasks=0")[1]["cells"] == tl["cells"]


def test_timeline_window_tasks_mode_and_row_groups(service):
    tasks = all_tasks(service, "run", None, "task_id,rank,start_ns,end_ns")
    lo = sorted(t["start_ns"] for t in tasks)[len(tasks) // 3]
    hi = sorted(t["start_ns"] for t in tasks)[len(tasks) // 2]
    status, tl = get_json(f"{service}/api/v1/timeline?source=run&t0={lo / 1e9}&t1={hi / 1e9}&bins=800")
    assert status == 200 and tl["mode"] == "tasks"
    lo_s, hi_s = tl["t0_ns"], tl["t1_ns"]
    want = {t["task_id"] for t in tasks if t["end_ns"] >= lo_s and t["start_ns"] <= hi_s}
    assert {i["task_id"] for i in tl["items"]} == want and tl["tasks"] == len(want)
    assert all(i["start"] <= (hi_s - lo_s) / 1e9 + 1e-6 and i["end"] >= -1e-6 for i in tl["items"])

    status, tl = get_json(f"{service}/api/v1/timeline?source=run&max_rows=2&max_tasks=0&bins=10")
    assert [r["label"] for r in tl["rows"]] == ["ranks 0-1", "ranks 2-3"]
    assert len(tl["cells"]["busy"]) == 2
    flt = q({"workflow_id": {"$exists": True}, "rank": 3})
    status, tl = get_json(f"{service}/api/v1/timeline?source=run&filter={flt}")
    assert [r["label"] for r in tl["rows"]] == ["rank 3"] and tl["tasks"] == \
        len([t for t in tasks if t["rank"] == 3])
    for bad in ("bins=0", "bins=100000", "max_rows=0", "t0=5&t1=4", "t0=nan", "filter=%7B", "max_tasks=-1"):
        status, doc = get_json(f"{service}/api/v1/timeline?source=run&{bad}")
        assert status in (400, 422) and "error" in doc, bad


def test_failure_groups_match_the_failed_tasks(service, tmp_path):
    for source in ("run", "runs"):
        status, doc = get_json(f"{service}/api/v1/failures/groups?source={source}")
        assert status == 200
        failed = all_tasks(service, source, {"status": "ERROR"})
        assert doc["failures"] == len(failed) == 1 and doc["groups"] == 1
        (g,) = doc["items"]
        assert g["type"] == failed[0]["error"]["type"] == "builtins.ValueError"
        assert g["count"] == 1 and g["activities"] == {"evaluate": 1}
        assert g["messages"] == [{"message": "cannot evaluate model-b.csv.clean", "count": 1}]
        assert g["task_ids"] == [failed[0]["task_id"]] and g["ranks"] == {"count": 1, "first": [0]}
    status, doc = get_json(f"{service}/api/v1/failures/groups?source=run&filter={q({'rank': 2})}")
    assert doc["failures"] == 0 and doc["items"] == []


def test_lineage_graph_nodes_and_edges(service):
    (err,) = all_tasks(service, "run", {"status": "ERROR"})
    status, g = get_json(f"{service}/api/v1/tasks/{err['task_id']}/graph?source=run")
    assert status == 200
    anc = get_json(f"{service}/api/v1/tasks/{err['task_id']}/ancestors?source=run")[1]["items"]
    assert g["ancestors"] == len(anc) == 4 and g["descendants"] == 0
    by_id = {n["task_id"]: n for n in g["nodes"]}
    assert set(by_id) == {err["task_id"]} | {a["task_id"] for a in anc}
    assert by_id[err["task_id"]]["side"] == "self"
    acts = {n["activity_id"]: n["task_id"] for n in g["nodes"]}
    edges = {(e["from"], e["to"], e["kind"]) for e in g["edges"]}
    # the data chain make -> clean -> train -> evaluate, and pipeline as everyone's parent
    for a, b in (("make", "clean"), ("clean", "train"), ("train", "evaluate")):
        assert (acts[a], acts[b], "data") in edges
    for child in ("make", "clean", "train", "evaluate"):
        assert (acts["pipeline"], acts[child], "parent") in edges
    same = get_json(f"{service}/api/v1/tasks/{err['task_id']}/graph?source=runs")[1]
    assert sorted(map(json.dumps, same["edges"])) == sorted(map(json.dumps, g["edges"]))
    status, small = get_json(f"{service}/api/v1/tasks/{acts['make']}/graph?source=run&max_nodes=1")
    assert status == 200 and len([n for n in small["nodes"] if n["side"] == "down"]) == 1
    assert small["descendants"] >= 3
    assert get_json(f"{service}/api/v1/tasks/nothex/graph?source=run")[0] == 400
    assert get_json(f"{service}/api/v1/tasks/{'f' * 16}-{'f' * 16}/graph?source=run")[0] == 404


def test_export_csv_jsonl_parquet_are_the_query_answer(service, tmp_path):
    flt = q({"rank": {"$in": [1, 2]}})
    want = all_tasks(service, "run", {"rank": {"$in": [1, 2]}})
    status, headers, body = http("GET", f"{service}/api/v1/tasks/export?source=run&format=jsonl&filter={flt}")
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="run-tasks.jsonl"' in headers["content-disposition"]
    assert [json.loads(x) for x in body.decode().splitlines()] == want

    status, headers, body = http("GET", f"{service}/api/v1/tasks/export?source=run&format=csv&filter={flt}"
                                        "&projection=task_id,rank,used.step,duration_s&sort=-rank")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["task_id", "rank", "used.step", "duration_s"]
    ordered = all_tasks(service, "run", {"rank": {"$in": [1, 2]}}, None)
    ordered.sort(key=lambda d: (-d["rank"], d["start_ns"], d["task_id"]))
    assert [r[0] for r in rows[1:]] == [d["task_id"] for d in ordered]
    assert [float(r[3]) for r in rows[1:]] == [(d["end_ns"] - d["start_ns"]) / 1e9 for d in ordered]

    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet export needs pyarrow (the test extra)")
    status, headers, body = http("GET", f"{service}/api/v1/tasks/export?source=runs&format=parquet&filter={flt}")
    assert status == 200
    (tmp_path / "t.parquet").write_bytes(body)
    table = pq.read_table(tmp_path / "t.parquet")   # the columns of `flowcept export --format parquet`
    assert table.column_names[:4] == ["task_id", "workflow_id", "parent_task_id", "activity_id"]
    assert table.column("task_id").to_pylist() == [d["task_id"] for d in want]
    assert table.column("rank").to_pylist() == [d["rank"] for d in want]
    assert table.column("start_ns").to_pylist() == [d["start_ns"] for d in want]
    assert [json.loads(u) for u in table.column("used").to_pylist()] == [d["used"] for d in want]
    assert str(table.schema.field("rank").type) == "int64"
    status, doc = get_json(f"{service}/api/v1/tasks/export?source=run&format=xlsx")
    assert status == 400 and "csv" in doc["error"]
    status, doc = get_json(f"{service}/api/v1/tasks/export?source=run&filter=%7Bbad")
    assert status == 400 and "JSON" in doc["error"]


def test_capabilities_and_ask_without_an_endpoint(service):
    status, doc = get_json(f"{service}/api/v1/capabilities")
    assert status == 200 and doc["ask"] == {"enabled": False, "model": None}
    assert {"csv", "jsonl"} <= set(doc["export_formats"])
    status, _h, body = http("POST", f"{service}/api/v1/ask", {"question": "which tasks failed?"})
    assert status == 404 and b"--ask-base-url" in body
    status, _h, body = http("POST", f"{service}/api/v1/ask", {"question": ""})
    assert status == 422


def test_ui_pages_load_without_the_token_but_data_does_not(run_data, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-ui\n")
    proc, base = start_server([run_data["h5"], "--token-file", str(token)])
    try:
        status, headers, body = http("GET", base + "/ui/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"app.js" in body
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        for name, media in (("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
            status, headers, body = http("GET", f"{base}/ui/{name}")
            assert status == 200 and headers["content-type"].startswith(media) and body
        for evil in ("../service.py", "..%2Fservice.py", "%2e%2e/core.py", "ui.py", "nothing.js"):
            status, _h, body = http("GET", f"{base}/ui/{evil}")
            assert status in (401, 404) and b"import" not in body, evil
        for path in ("/api/v1/runs", "/api/v1/timeline", "/api/v1/capabilities", "/api/v1/failures/groups",
                     "/api/v1/tasks/export", "/ui-not-ui"):
            assert http("GET", base + path)[0] == 401, path
        auth = {"Authorization": "Bearer s3cret-ui"}
        assert get_json(base + "/api/v1/runs", headers=auth)[1]["total"] == 2
        import urllib.request
        req = urllib.request.Request(base + "/")
        with urllib.request.urlopen(req, timeout=10) as r:   # follows the redirect to /ui/
            assert r.url.endswith("/ui/") and b"app.js" in r.read()
    finally:
        stop(proc)
