"""The Grafana dashboards type-check against @grafana/schema (and a broken one does
not); every PromQL expression of their panels parses (`promtool check rules`) and
returns series from a real Prometheus scraping `flowcept metrics` during a live
4-rank MPI run through Redis and a keeper; every metric they use is one the
exporter exports; every task table URL of the data-source recipe answers from the
real query service."""
import copy
import glob
import json
import os
import re
import sys

import subprocess
import time

import pytest

from access_support import CLI, ROOT, clean_env, free_port, get_json, stop, wait_http

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
pytestmark = pytest.mark.timeout(600)

DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json")))


def load():
    return {os.path.basename(p)[:-5].replace("-", "_"): json.load(open(p)) for p in DASHBOARDS}


@pytest.fixture(scope="module")
def toolchain():
    from grafana_check import ensure_toolchain
    cache, why = ensure_toolchain()
    if cache is None:
        pytest.skip(why)
    return cache


def test_dashboards_typecheck(toolchain, tmp_path):
    from grafana_check import typecheck
    assert len(DASHBOARDS) >= 2
    rc, out = typecheck(load(), str(tmp_path / "ok"))
    assert rc == 0, out


def test_a_broken_dashboard_fails_the_check(toolchain, tmp_path):
    from grafana_check import typecheck
    missing = copy.deepcopy(load()["flowcept_live"])
    del missing["schemaVersion"]                      # required by the schema
    rc, out = typecheck({"missing": missing}, str(tmp_path / "missing"))
    assert rc != 0 and "schemaVersion" in out, out
    wrong = copy.deepcopy(load()["flowcept_live"])
    wrong["panels"][1]["gridPos"] = {"x": "left", "y": 0, "w": 1, "h": 1}
    rc, out = typecheck({"wrong": wrong}, str(tmp_path / "wrong"))
    assert rc != 0 and "not assignable to type 'number'" in out, out


def _exprs(d):
    for p in d["panels"]:
        for t in p.get("targets", []):
            if "expr" in t:
                yield t["expr"]
    for v in d.get("templating", {}).get("list", []):
        if isinstance(v.get("query"), str) and "(" in v["query"]:
            yield v["query"]


def test_promql_uses_exported_metric_names(run_data):
    from prometheus_client import generate_latest
    from flowcept.access.metrics import FlowceptCollector
    text = generate_latest(FlowceptCollector(stores=[run_data["runs"]], shm_dirs=[run_data["shm"]],
                                             spool_dirs=[run_data["base"]]).registry).decode()
    declared = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
        declared.add(name if kind != "counter" or name.endswith("_total") else name + "_total")
    used = set()
    for d in load().values():
        for e in _exprs(d):
            used |= set(re.findall(r"\b(flowcept_[a-z_]+)", e))
    assert used and used <= declared, used - declared
    panels = {p["title"] for p in load()["flowcept_live"]["panels"]}
    for want in ("records per second", "tasks by activity and status", "leader lag (ring backlog)",
                 "ring spills and drops per second", "redeliveries, rejects, errors per second"):
        assert want in panels


def test_task_tables_answer_from_the_query_service(service):
    tables = [p for p in load()["flowcept_tasks"]["panels"] if p["type"] == "table"]
    assert len(tables) == 4
    for p in tables:
        t = p["targets"][0]
        url = t["url"].replace("$source", "run").replace("$activity", ".*")
        status, doc = get_json(service + url)
        assert status == 200, (url, doc)
        items = doc[t["root_selector"]]
        assert items, url
        for col in t["columns"]:
            head = col["selector"].split(".")[0]
            assert any(head in it for it in items), (url, col)


@pytest.fixture(scope="module")
def promtool():
    from prometheus_server import ensure_prometheus
    exe, why = ensure_prometheus()
    if exe is None:
        pytest.skip(why)
    path = os.path.join(os.path.dirname(exe), "promtool")
    if not os.path.exists(path):
        pytest.skip(f"{path} missing (Debian's prometheus package ships it)")
    return exe, path


def test_every_panel_expression_parses(promtool, tmp_path):
    from grafana_check import panel_expressions, promtool_check
    exprs = [e for d in load().values() for _t, e in panel_expressions(d)]
    assert len(exprs) >= 20
    rc, out = promtool_check(exprs, str(tmp_path / "ok"), promtool[1])
    assert rc == 0 and f"SUCCESS: {len(exprs)} rules found" in out, out
    rc, out = promtool_check(exprs + ['sum(rate(flowcept_records_stored_total{job=~".*"}[1m])'],
                             str(tmp_path / "bad"), promtool[1])
    assert rc != 0 and "unclosed left parenthesis" in out, out


def test_every_panel_has_series_from_a_live_run(promtool, tmp_path):
    """heat2d on 4 ranks -> Redis -> a keeper -> LMDB, with `flowcept metrics` over
    the keeper's store, the rings and the spool, scraped by a real Prometheus every
    200 ms: while the run lives, every panel's expression returns at least one series,
    and the series carry the job's name."""
    from grafana_check import panel_expressions
    from prometheus_server import Prometheus
    sys.path.insert(0, ROOT + "/tests")
    from support.redis_server import RedisServer, redis_available
    ok, why = redis_available()
    if not ok:
        pytest.skip(why)
    base = str(tmp_path)
    store, shm, runs = (os.path.join(base, x) for x in ("store", "shm", "runs"))
    for d in (store, shm, runs):
        os.makedirs(d, exist_ok=True)
    panels = [(d_name, t, e) for d_name, d in load().items() for t, e in panel_expressions(d)
              if "flowcept_" in e]
    procs = []
    prom = None
    with RedisServer(os.path.join(base, "redis")) as redis:
        try:
            keeper = subprocess.Popen(CLI[:2] + ["flowcept", "keeper", "run", "--url", redis.url,
                                                 "--store-dir", store, "--name", "k1"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
            procs.append(keeper)
            mport = free_port()
            exporter = subprocess.Popen(CLI + ["metrics", "--store", store, "--shm-dir", shm, "--spool", runs,
                                               "--port", str(mport)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
            procs.append(exporter)
            wait_http(f"http://127.0.0.1:{mport}/metrics", exporter)
            prom = Prometheus(promtool[0], os.path.join(base, "prom"), free_port(), [f"127.0.0.1:{mport}"],
                              interval="200ms")
            prom.wait_for('up{job="flowcept"}', lambda r: r and r[0]["value"][1] == "1", 60)
            env = clean_env(FLOWCEPT_SHM_DIR=shm, FLOWCEPT_TRANSPORT="redis", FLOWCEPT_TRANSPORT_URL=redis.url,
                            FLOWCEPT_JOB_ID="4242")
            run = subprocess.Popen(["mpiexec", "-n", "4", sys.executable, os.path.join(ROOT, "examples", "heat2d.py"),
                                    "--steps", "6000", "--n", "64", "--run-dir", runs],
                                   env=env, cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            procs.append(run)
            empty = {(n, t, e) for n, t, e in panels}
            jobs = set()
            t0 = time.monotonic()
            while empty and run.poll() is None and time.monotonic() - t0 < 240:
                for n, t, e in sorted(empty):
                    res = prom.query(e)
                    if res:
                        empty.discard((n, t, e))
                for r in prom.query("flowcept_leader_records_drained_total") or []:
                    jobs.add(r["metric"].get("job"))
                time.sleep(0.5)
            assert not empty, f"panels without series during the run: {sorted(empty)}"
            assert jobs == {"4242"}, jobs
            assert run.wait(timeout=240) == 0, run.stdout.read().decode()[-2000:]
            for label in ("flowcept_records_stored_total", "flowcept_ring_records_captured_total"):
                got = {r["metric"].get("job") for r in prom.query(f"max_over_time({label}[10m])")}
                assert got == {"4242"}, (label, got)
            drained = prom.wait_for('sum(max_over_time(flowcept_leader_records_drained_total{job="4242"}[10m]))',
                                    lambda r: r and float(r[0]["value"][1]) > 0, 30)
            # every drained record reaches the store (the stored count leaves out the few
            # workflow records the leaders drain beside the tasks)
            want = float(drained[0]["value"][1])
            stored = prom.wait_for('sum(flowcept_records_stored_total{job="4242"})',
                                   lambda r: r and want - 16 <= float(r[0]["value"][1]) <= want, 60)
            assert float(stored[0]["value"][1]) > 1000
        finally:
            if prom is not None:
                prom.stop()
            for p in reversed(procs):
                stop(p)
