"""The browser UI of `flowcept serve`, driven in a real headless Chromium (Debian's, through
Playwright), over runs captured through the real path: an MPI job with failures and
data passed between tasks, a run with hostile names, a run still being written.

What each page shows is checked against the JSON API's answer to the same question.
No request may leave the machine: the browser resolves no other host, and every page
request to a non-loopback address is aborted and fails the test.  Screenshots of each
view go to the pytest tmp dir (and those of docs/access.md to $UI_SCREENSHOT_DIR when set:
UI_SCREENSHOT_DIR=docs/img refreshes them)."""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from access_support import HERE, ROOT, clean_env, get_json, start_server, stop

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from chromium import ensure_chromium, guard_network, launch  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
VIEWPORT = {"width": 1400, "height": 900}
DOCS_VIEWS = ("runs", "workflow", "tasks", "task", "ask")   # the pictures in docs/access.md


def q(d):
    return urllib.parse.quote(json.dumps(d))


def api(base, path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    status, doc = get_json(url)
    assert status == 200, (url, doc)
    return doc


# -- the runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """An MPI job (4 ranks, 120 steps: 3,358 tasks, 4 failures of 2 error types) and the
    pipeline app (lineage, 1 failure) in one run dir, and an archive of the pipeline job."""
    from flowcept.archive.compact import compact
    base = tmp_path_factory.mktemp("ui")
    runs, shm = str(base / "runs"), str(base / "shm")
    os.makedirs(shm)
    env = clean_env(FLOWCEPT_SHM_DIR=shm)
    subprocess.run(["mpiexec", "-n", "4", sys.executable, os.path.join(HERE, "ui_demo_app.py"), runs, "120"],
                   check=True, timeout=240, env=env, cwd=str(base), capture_output=True)
    (mpi_job,) = os.listdir(runs)
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "archive", "pipeline_app.py")], check=True,
                   timeout=60, env=clean_env(FLOWCEPT_RUN_DIR=runs, FLOWCEPT_SHM_DIR=shm), capture_output=True)
    (pipeline_job,) = set(os.listdir(runs)) - {mpi_job}
    h5 = str(base / "pipeline.h5")
    compact(os.path.join(runs, pipeline_job), h5, progress=False)
    return {"base": str(base), "runs": runs, "h5": h5, "shm": shm}


@pytest.fixture(scope="module")
def ui(demo):
    """`flowcept serve` over the store dir (source "runs": both jobs) and the pipeline job's
    archive (source "pipeline")."""
    proc, base = start_server([demo["runs"], demo["h5"]])
    yield base
    stop(proc)


# -- the browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    exe, why = ensure_chromium()
    if exe is None:
        pytest.skip(why)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (in the test extra; "
                    "`playwright install` is not needed, the system chromium is used)")
    with sync_playwright() as p:
        b = launch(p, exe)
        yield b
        b.close()


class Tab:
    """A page in a fresh browser context, with no network but loopback, and a record of
    what went wrong in it (script errors, dialogs, requests that tried to leave)."""

    def __init__(self, browser):
        self.attempts, self.problems = [], []
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        guard_network(self.context, self.attempts)
        self.page = self.new_page()

    def new_page(self):
        page = self.context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        page.on("console", lambda m: self.problems.append(f"console: {m.text}")
                if m.type == "error" and "Failed to load resource" not in m.text else None)
        page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("response", lambda r: self.problems.append(f"{r.status} {r.url}")
                if "/ui/" in r.url and r.status >= 400 else None)
        return page

    def close(self):
        self.context.close()
        assert self.attempts == [], f"requests tried to leave the machine: {self.attempts}"
        assert self.problems == [], self.problems


@pytest.fixture
def tab(browser):
    t = Tab(browser)
    yield t
    t.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = tmp_path_factory.mktemp("ui-screenshots")
    also = os.environ.get("UI_SCREENSHOT_DIR")

    def shot(page, name):
        page.wait_for_timeout(300)   # let canvases settle after their last fetch
        path = os.path.join(where, f"ui-{name}.png")
        page.screenshot(path=path, full_page=True)
        assert os.path.getsize(path) > 10_000
        if also and name in DOCS_VIEWS:
            os.makedirs(also, exist_ok=True)
            shutil.copy(path, os.path.join(also, f"ui-{name}.png"))
        return path
    shot.dir = where
    return shot


def texts(locator):
    return [locator.nth(i).inner_text().strip() for i in range(locator.count())]


def attrs(locator, name):
    return [locator.nth(i).get_attribute(name) for i in range(locator.count())]


# -- the flow ---------------------------------------------------------------------------------------
def test_runs_workflow_failed_tasks_and_lineage(ui, tab, shots):
    page = tab.page
    runs = api(ui, "/api/v1/runs")
    page.goto(ui + "/")
    page.wait_for_selector("#runs-table tbody tr")
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == runs["total"] == 3
    assert attrs(rows, "data-source") == [r["source"] for r in runs["items"]]
    assert attrs(rows, "data-workflow") == [r["workflow_id"] for r in runs["items"]]
    assert texts(page.locator("#runs-table tbody td:nth-child(8)")) == [f"{r['tasks']:,}" for r in runs["items"]]
    assert texts(page.locator("#runs-table tbody td:nth-child(9)")) == [f"{r['failures']:,}" for r in runs["items"]]
    assert page.locator("#nav-ask").is_hidden()   # no LLM endpoint configured
    shots(page, "runs")

    # the runs list filters and sorts on the server
    page.fill("#runs-q", "pipe")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 2")
    assert set(texts(page.locator("#runs-table a.run-link"))) == {"pipeline"}
    page.goto(ui + "/ui/#/runs")
    page.click("#runs-table th:has-text('Tasks')")
    page.wait_for_function("() => location.hash.includes('sort=-tasks')")
    page.wait_for_selector("#runs-table tbody tr")
    shown = [int(x.replace(",", "")) for x in texts(page.locator("#runs-table tbody td:nth-child(8)"))]
    assert shown == sorted(shown, reverse=True) and len(shown) == 3

    # the workflow of the MPI job, from its store
    demo = next(r for r in runs["items"] if r["name"] == "ui-demo" and r["kind"] == "store")
    src, wf = demo["source"], demo["workflow_id"]
    page.click(f'tr[data-source="{src}"][data-workflow="{wf}"] a.run-link')
    page.wait_for_selector("#failure-groups")
    page.wait_for_function("() => (document.querySelector('#timeline-info')?.textContent || '').includes('bins')")
    summary = api(ui, "/api/v1/workflows/summary", source=src, workflow_id=wf)
    assert page.inner_text("#wf-name") == "ui-demo"
    assert page.inner_text("#wf-tasks") == f"{summary['tasks']:,}" == "3,358"
    assert page.inner_text("#wf-failed") == str(summary["by_status"]["ERROR"]) == "4"
    assert page.locator("#live-badge").is_visible()       # a store: refreshed while it is written
    flt = json.dumps({"workflow_id": wf})
    groups = api(ui, "/api/v1/failures/groups", source=src, filter=flt)
    grows = page.locator("#failure-groups tbody tr")
    assert attrs(grows, "data-type") == [g["type"] for g in groups["items"]] == \
        ["__main__.ConvergenceError", "builtins.ValueError"]
    assert texts(page.locator("#failure-groups tbody td:nth-child(2)")) == ["2", "2"]
    acts = api(ui, "/api/v1/stats", source=src, by="activity", filter=flt)
    assert sorted(attrs(page.locator("#activity-table tbody tr"), "data-activity")) == \
        sorted(r["activity"] for r in acts["items"]) == ["check", "load", "reduce", "solve"]
    by_rank = api(ui, "/api/v1/stats", source=src, by="rank", filter=flt)
    assert attrs(page.locator("#rank-table tbody tr"), "data-rank") == [str(r["rank"]) for r in by_rank["items"]]
    info = page.inner_text("#timeline-info")
    assert f"{summary['tasks']:,} tasks in" in info    # aggregated: more tasks than pixels across
    shots(page, "workflow")

    # zoom into the timeline by dragging across it: the server sends the narrower window
    box = page.locator("#timeline-canvas").bounding_box()
    y = box["y"] + 40
    x0, x1 = box["x"] + 96 + (box["width"] - 108) * 0.30, box["x"] + 96 + (box["width"] - 108) * 0.32
    with page.expect_response(lambda r: "/api/v1/timeline" in r.url and "t0=" in r.url) as got:
        page.mouse.move(x0, y)
        page.mouse.down()
        page.mouse.move((x0 + x1) / 2, y)
        page.mouse.move(x1, y)
        page.mouse.up()
    zoomed = got.value.json()
    assert 0 < zoomed["tasks"] < summary["tasks"]
    page.wait_for_function(f"() => (document.querySelector('#timeline-info')?.textContent || '').includes('{zoomed['tasks']:,} tasks')")
    assert page.locator("#zoom-out").is_enabled()
    if zoomed["mode"] == "tasks":
        shots(page, "workflow-zoomed")

    # the tasks of the workflow, filtered by status
    page.click("#browse-tasks")
    page.wait_for_selector("#tasks-form")
    page.select_option("#f-status", "ERROR")
    page.click("#f-apply")
    page.wait_for_function("() => (document.querySelector('#tasks-count')?.textContent || '').includes('of 4')")
    want = api(ui, "/api/v1/tasks", source=src, filter=json.dumps({"$and": [{"workflow_id": wf}, {"status": "ERROR"}]}),
               projection="task_id,activity_id,error", limit=100)
    trs = page.locator("#tasks-table tbody tr")
    assert attrs(trs, "data-task") == [d["task_id"] for d in want["items"]]
    assert set(attrs(trs, "data-status")) == {"ERROR"}
    shots(page, "tasks")

    # a failed task: its error, its inputs, and its lineage
    failed = next(d for d in want["items"] if d["error"]["type"].endswith("ConvergenceError"))
    page.click(f'tr[data-task="{failed["task_id"]}"] a.task-link')
    page.wait_for_selector("#task-error")
    doc = api(ui, f"/api/v1/tasks/{failed['task_id']}", source=src)
    assert page.inner_text("#task-activity") == doc["activity_id"] == "solve"
    assert page.inner_text("#task-id") == doc["task_id"]
    err_text = page.inner_text("#task-error")
    assert doc["error"]["type"] in err_text and doc["error"]["message"] in err_text
    assert json.dumps(doc["used"]["block"]) in page.inner_text("#task-used")
    assert json.loads(page.text_content("#task-raw")) == doc     # every field, exactly (ns included)
    page.wait_for_selector("#lineage svg g.node")
    graph = api(ui, f"/api/v1/tasks/{doc['task_id']}/graph", source=src, max_nodes=12)
    assert sorted(attrs(page.locator("#lineage g.node"), "data-task")) == sorted(n["task_id"] for n in graph["nodes"])
    assert page.inner_text("#lineage-counts") == f"{graph['ancestors']} upstream · {graph['descendants']} downstream"
    ancestors = api(ui, f"/api/v1/tasks/{doc['task_id']}/ancestors", source=src)["items"]
    (load,) = [a for a in ancestors if a["activity_id"] == "load"]
    assert load["generated"]["return"] == doc["used"]["block"]
    shots(page, "task")

    # follow the lineage upstream: the load that produced the block
    page.click(f'#lineage g.node[data-task="{load["task_id"]}"]')
    page.wait_for_function(f"() => (document.querySelector('#task-id')?.textContent || '') === '{load['task_id']}'")
    assert page.inner_text("#task-activity") == "load"
    page.wait_for_selector("#lineage svg g.node")
    down = api(ui, f"/api/v1/tasks/{load['task_id']}/descendants", source=src)["items"]
    assert doc["task_id"] in {d["task_id"] for d in down}
    assert doc["task_id"] in attrs(page.locator("#lineage g.node"), "data-task")
    # and back downstream to the failed task
    page.click(f'#lineage g.node[data-task="{doc["task_id"]}"]')
    page.wait_for_selector("#task-error")
    assert page.inner_text("#task-id") == doc["task_id"]


def test_pipeline_lineage_parent_and_children(ui, tab, shots):
    page = tab.page
    (err,) = api(ui, "/api/v1/tasks", source="pipeline", filter=json.dumps({"activity_id": "evaluate", "status": "ERROR"}),
                 limit=10)["items"]
    page.goto(ui + f"/ui/#/task/pipeline/{err['task_id']}")
    page.wait_for_selector("#lineage svg g.node")
    page.wait_for_selector("#task-error")
    anc = api(ui, f"/api/v1/tasks/{err['task_id']}/ancestors", source="pipeline")["items"]
    shown = set(attrs(page.locator("#lineage g.node"), "data-task"))
    assert shown == {err["task_id"]} | {a["task_id"] for a in anc}
    assert page.locator("#lineage path.edge.data").count() >= 3
    assert page.locator("#lineage path.edge.parent").count() >= 4
    shots(page, "task-pipeline")
    # the parent: the pipeline call, whose children are this run's steps
    page.click("#parent-link")
    page.wait_for_selector("#children-table")
    parent = api(ui, f"/api/v1/tasks/{err['parent_task_id']}", source="pipeline")
    assert page.inner_text("#task-activity") == parent["activity_id"] == "pipeline"
    kids = api(ui, "/api/v1/tasks", source="pipeline", filter=json.dumps({"parent_task_id": parent["task_id"]}),
               projection="activity_id")
    assert texts(page.locator("#children-table tbody td:nth-child(2)")) == [k["activity_id"] for k in kids["items"]]


def test_tasks_pages_fields_and_export(ui, tab, tmp_path):
    page = tab.page
    page.goto(ui + "/ui/#/tasks/runs?activity=solve&fields=used.block,generated.solution&limit=25&sort=-rank")
    page.wait_for_selector("#tasks-table tbody tr")
    flt = json.dumps({"activity_id": "solve"})
    proj = "task_id,used.block,generated.solution"
    p1 = api(ui, "/api/v1/tasks", source="runs", filter=flt, sort="-rank", limit=25, projection=proj)
    rows = page.locator("#tasks-table tbody tr")
    assert attrs(rows, "data-task") == [d["task_id"] for d in p1["items"]]
    assert texts(page.locator("#tasks-table tbody td:nth-child(8)")) == [d["used"]["block"] for d in p1["items"]]
    assert texts(page.locator("#tasks-table tbody td:nth-child(9)")) == \
        [d.get("generated", {}).get("solution", "") for d in p1["items"]]
    total = api(ui, "/api/v1/tasks/count", source="runs", filter=flt)["total"]
    # the page is shown first, its count when the server has it
    page.wait_for_function(f"() => document.querySelector('#tasks-count').textContent === '1–25 of {total:,}'")
    ranks = [int(x) for x in texts(page.locator("#tasks-table tbody td:nth-child(4)"))]
    assert ranks == sorted(ranks, reverse=True)

    # the next page is the API's next page, and Previous comes back
    page.click("#next")
    page.wait_for_function("() => (document.querySelector('#tasks-count')?.textContent || '').startsWith('26–50')")
    p2 = api(ui, "/api/v1/tasks", source="runs", filter=flt, sort="-rank", limit=25, projection=proj,
             cursor=p1["next_cursor"])
    assert attrs(page.locator("#tasks-table tbody tr"), "data-task") == [d["task_id"] for d in p2["items"]]
    page.click("#prev")
    page.wait_for_function("() => (document.querySelector('#tasks-count')?.textContent || '').startsWith('1–25')")

    # export every match of the current view
    with page.expect_download() as dl:
        page.click("#export")
    path = dl.value.path()
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["task_id", "activity_id", "status", "rank", "hostname", "started_at", "duration_s",
                        "used.block", "generated.solution"]
    everything = api(ui, "/api/v1/tasks", source="runs", filter=flt, sort="-rank", limit=10_000, projection=proj)
    assert [r[0] for r in table[1:]] == [d["task_id"] for d in everything["items"]] and len(table) == 961
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet export needs pyarrow (the test extra)")
    page.select_option("#export-format", "parquet")
    with page.expect_download() as dl:
        page.click("#export")
    got = pq.read_table(dl.value.path())   # every field of the matches, in start order
    in_order = api(ui, "/api/v1/tasks", source="runs", filter=flt, limit=10_000, projection=proj)["items"]
    assert got.column("task_id").to_pylist() == [d["task_id"] for d in in_order]
    assert [json.loads(u)["block"] for u in got.column("used").to_pylist()] == \
        [d["used"]["block"] for d in in_order]

    # filters the server refuses say why, on the page
    page.fill("#f-filter", '{"rank": {"$near": 1}}')
    page.click("#f-apply")
    page.wait_for_selector("#filter-error:not([hidden])")
    status, doc = get_json(f"{ui}/api/v1/tasks?source=runs&filter={q({'rank': {'$near': 1}})}")
    assert status == 400 and doc["error"] in page.inner_text("#filter-error")
    page.fill("#f-filter", '{"rank": ')
    page.click("#f-apply")
    page.wait_for_function("() => (document.querySelector('#filter-error')?.textContent || '').startsWith('Filter:')")
    # a JSON filter and the simple column filters together
    page.fill("#f-filter", '{"used.block": {"$regex": "^block-1-"}}')
    page.fill("#f-activity", "check")
    page.fill("#f-fields", "")
    page.click("#f-apply")
    page.wait_for_function("() => location.hash.includes('activity=check')")
    page.wait_for_function("() => (document.querySelector('#tasks-count')?.textContent || '') === 'no task matches'")
    both = api(ui, "/api/v1/tasks", source="runs", limit=100, filter=json.dumps(
        {"$and": [{"used.block": {"$regex": "^block-1-"}}, {"activity_id": "check"}]}))
    assert both["total"] == 0   # check tasks use a "solution", not a "block"
    page.fill("#f-filter", '{"used.solution": {"$regex": "^block-1-4"}}')
    page.click("#f-apply")
    page.wait_for_function("() => (document.querySelector('#tasks-count')?.textContent || '').includes(' of ')")
    both = api(ui, "/api/v1/tasks", source="runs", limit=100, filter=json.dumps(
        {"$and": [{"used.solution": {"$regex": "^block-1-4"}}, {"activity_id": "check"}]}))
    assert both["total"] == 11
    assert attrs(page.locator("#tasks-table tbody tr"), "data-task") == [d["task_id"] for d in both["items"]]


# -- hostile names ----------------------------------------------------------------------------------
IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
SVG = '<svg onload="window.__xss=3"></svg>'

INJECTED = """() => {
  const bad = [...document.querySelectorAll('img')].filter((e) => !e.closest('header')).length
    + document.querySelectorAll('script:not([src]), b, [onerror], [onload], main svg svg, iframe, object').length;
  return {bad, xss: window.__xss === undefined ? null : window.__xss};
}"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    runs = str(base / "runs")
    os.makedirs(base / "shm")
    subprocess.run([sys.executable, os.path.join(HERE, "hostile_app.py")], check=True, timeout=60,
                   env=clean_env(FLOWCEPT_RUN_DIR=runs, FLOWCEPT_SHM_DIR=str(base / "shm")), capture_output=True)
    proc, url = start_server([runs])
    yield url
    stop(proc)


def test_hostile_names_and_values_render_as_text(hostile, tab, shots):
    page = tab.page
    (run,) = api(hostile, "/api/v1/runs")["items"]
    assert run["name"] == SCRIPT and run["campaign_id"] == IMG
    tasks = api(hostile, "/api/v1/tasks", limit=100)["items"]
    views = ["/runs", f"/workflow/{run['source']}/{run['workflow_id']}", f"/tasks/{run['source']}",
             f"/tasks/{run['source']}?fields=used,generated,tags,error.message"]
    views += [f"/task/{run['source']}/{t['task_id']}" for t in tasks]
    for v in views:
        page.goto(hostile + "/ui/#" + v)
        page.wait_for_selector("main .page")
        if v.startswith("/task/"):
            page.wait_for_selector("#lineage svg, #lineage .empty")
        if v.startswith("/workflow/"):
            page.wait_for_function("() => (document.querySelector('#timeline-info')?.textContent || '').includes('tasks')")
        got = page.evaluate(INJECTED)
        assert got == {"bad": 0, "xss": None}, v
    # the hostile text is shown, as text
    page.goto(hostile + "/ui/#/runs")
    page.wait_for_selector("#runs-table tbody tr")
    body = page.inner_text("main")
    assert SCRIPT in body and IMG in body
    page.goto(hostile + f"/ui/#/workflow/{run['source']}/{run['workflow_id']}")
    page.wait_for_selector("#failure-groups")
    page.wait_for_function("() => (document.querySelector('#timeline-info')?.textContent || '').includes('tasks')")
    body = page.inner_text("main")
    assert f"{IMG} failed on {SVG}/<b>bold</b>" in body and SCRIPT in body
    shots(page, "hostile-workflow")
    bad = next(t for t in tasks if t["activity_id"] == SVG)
    page.goto(hostile + f"/ui/#/task/{run['source']}/{bad['task_id']}")
    page.wait_for_selector("#task-used")
    assert page.inner_text("#task-activity") == SVG
    assert IMG in page.inner_text("#task-used") and json.dumps(SCRIPT) in page.inner_text("#task-used")
    assert json.dumps(IMG) in page.inner_text("#task-generated")
    assert page.evaluate(INJECTED) == {"bad": 0, "xss": None}


# -- live, token, ask --------------------------------------------------------------------------------
def test_a_running_job_refreshes_as_records_arrive(browser, tmp_path):
    runs, go = str(tmp_path / "runs"), str(tmp_path / "go")
    os.makedirs(tmp_path / "shm", exist_ok=True)
    app = subprocess.Popen([sys.executable, os.path.join(HERE, "live_app.py"), go],
                           env=clean_env(FLOWCEPT_RUN_DIR=runs, FLOWCEPT_SHM_DIR=str(tmp_path / "shm")),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = None
    tab = Tab(browser)
    try:
        from flowcept.access.core import Access
        deadline = time.monotonic() + 60
        while True:   # the first part is stored while the job waits
            try:
                with_store = Access([runs])
                n = with_store.tasks(filter={}, limit=1)["total"]
                with_store.close()
            except (FileNotFoundError, ValueError):
                n = 0
            if n == 30:
                break
            assert time.monotonic() < deadline and app.poll() is None, f"{n} tasks stored"
            time.sleep(0.2)
        proc, base = start_server([runs])
        (run,) = api(base, "/api/v1/runs")["items"]
        page = tab.page
        page.goto(base + f"/ui/#/workflow/{run['source']}/{run['workflow_id']}")
        page.wait_for_selector("#live-badge")
        assert page.inner_text("#wf-tasks") == "30" and page.inner_text("#wf-failed") == "0"
        open(go, "w").close()   # the job goes on
        assert app.wait(timeout=60) == 0
        page.wait_for_function("() => (document.querySelector('#wf-tasks')?.textContent || '') === '75'", timeout=30_000)
        page.wait_for_function("() => (document.querySelector('#wf-failed')?.textContent || '') === '1'", timeout=15_000)
        page.wait_for_selector("#failure-groups tr[data-type='builtins.RuntimeError']", timeout=15_000)
        page.wait_for_function("() => (document.querySelector('#timeline-info')?.textContent || '').includes('75 tasks')",
                               timeout=15_000)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        if proc is not None:
            stop(proc)
        tab.close()


def test_login_prompt_keeps_the_token_for_the_tab(browser, demo, tmp_path):
    token = tmp_path / "token"
    token.write_text("ui-token-123\n")
    proc, base = start_server([demo["h5"], "--token-file", str(token)])
    tab = Tab(browser)
    try:
        page = tab.page
        page.goto(base + "/ui/#/runs")
        page.wait_for_selector("#login[open]")
        page.fill("#login-token", "wrong")
        page.press("#login-token", "Enter")
        page.wait_for_selector("#login-error:not([hidden])")
        assert "refused" in page.inner_text("#login-error")
        page.fill("#login-token", "ui-token-123")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#runs-table tbody tr")
        assert page.locator("#runs-table tbody tr").count() == 1
        assert page.evaluate("sessionStorage.getItem('flowcept.token')") == "ui-token-123"
        page.reload()      # the same tab keeps it
        page.wait_for_selector("#runs-table tbody tr")
        assert not page.locator("#login").is_visible()
        other = Tab(browser)   # another session does not
        try:
            other.page.goto(base + "/ui/#/runs")
            other.page.wait_for_selector("#login[open]")
        finally:
            other.close()
        page.click("#sign-out")
        page.wait_for_selector("#login[open]")
        assert page.evaluate("sessionStorage.getItem('flowcept.token')") is None
    finally:
        stop(proc)
        tab.close()


def test_ask_box_shows_the_answer_and_the_queries_it_ran(browser, endpoint, demo, shots):
    proc, base = start_server([demo["h5"], "--ask-base-url", endpoint.base_url, "--ask-model", "smollm2",
                               "--ask-max-tokens", "24", "--ask-max-steps", "3", "--ask-timeout", "240"])
    tab = Tab(browser)
    try:
        page = tab.page
        page.goto(base + "/ui/#/runs")
        page.wait_for_selector("#nav-ask:not([hidden])")
        page.click("#nav-ask")
        page.fill("#ask-question", "How many tasks failed in this run?")
        with page.expect_response(lambda r: r.url.endswith("/api/v1/ask"), timeout=560_000) as got:
            page.click("#ask-send")
        res = got.value.json()
        page.wait_for_selector("#ask-text")
        assert page.inner_text("#ask-text") == (res["answer"].strip() or "(no answer)")
        assert res["calls"]   # the model asked for a query and the agent ran it
        rows = page.locator("#ask-calls tbody tr")
        assert rows.count() == len(res["calls"])
        assert texts(page.locator("#ask-calls tbody td:nth-child(1)")) == [c["name"] for c in res["calls"]]
        for c in res["calls"]:
            out = json.loads(c["result"])
            assert "source" in out or "error" in out
        page.click("#ask-calls tbody tr:first-child summary")   # what the first query got back
        assert json.loads(page.inner_text("#ask-calls tbody tr:first-child pre")) == json.loads(res["calls"][0]["result"])
        shots(page, "ask")
    finally:
        stop(proc)
        tab.close()
