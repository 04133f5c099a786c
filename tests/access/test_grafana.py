"""The Grafana dashboards type-check against @grafana/schema (and a broken one does
not), every PromQL metric they use is one the exporter exports, and every task table
URL of the data-source recipe answers from the real query service."""
import copy
import glob
import json
import os
import re
import sys

import pytest

from access_support import ROOT, get_json

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
