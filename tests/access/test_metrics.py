"""Prometheus metrics: a real Prometheus scrapes `flowcept metrics` during a 4-rank
MPI run (held until its rings were seen live) and its query API returns the stored
records, tasks by activity and status, failed tasks and the rings seen live; keeper
status files become keeper metrics."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from access_support import CLI, ROOT, clean_env, free_port, stop, wait_http

HERE = os.path.dirname(os.path.abspath(__file__))

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
pytestmark = pytest.mark.timeout(400)


def scrape(url):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture
def prometheus_exe():
    from prometheus_server import ensure_prometheus
    exe, why = ensure_prometheus()
    if exe is None:
        pytest.skip(why)
    return exe


def test_prometheus_scrapes_a_4_rank_run(prometheus_exe, tmp_path):
    from prometheus_server import Prometheus
    from flowcept.access.core import Access
    base = str(tmp_path)
    runs, shm = os.path.join(base, "runs"), os.path.join(base, "rings")
    os.makedirs(runs)
    os.makedirs(shm, exist_ok=True)
    mport = free_port()
    exporter = subprocess.Popen(CLI + ["metrics", "--store", runs, "--shm-dir", shm, "--port", str(mport)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
    prom = run = None
    try:
        wait_http(f"http://127.0.0.1:{mport}/metrics", exporter)
        # scraped every 200 ms, so that the rings (which live only while the run does) are seen
        prom = Prometheus(prometheus_exe, os.path.join(base, "prom"), free_port(),
                          [f"127.0.0.1:{mport}"], interval="200ms")
        prom.wait_for('up{job="flowcept"}', lambda r: r and r[0]["value"][1] == "1", 60)
        env = clean_env(FLOWCEPT_SHM_DIR=shm)
        go = os.path.join(base, "go")
        # the run captures, then holds until the rings were seen live (they vanish when it ends)
        run = subprocess.Popen(["mpiexec", "-n", "4", sys.executable, os.path.join(HERE, "held_mpi_app.py"),
                                runs, go], env=env, cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        live = {}
        t0 = time.monotonic()
        while run.poll() is None and time.monotonic() - t0 < 120:   # the exporter sees the rings live
            m = scrape(f"http://127.0.0.1:{mport}/metrics")
            for labels, v in m.get("flowcept_ring_records_captured_total", []):
                live[labels["ring"]] = max(v, live.get(labels["ring"], 0))
            if len(live) >= 4 and all(v > 0 for v in live.values()):
                break
            time.sleep(0.3)
        # and so does Prometheus, before the run is let go
        prom.wait_for("flowcept_ring_records_captured_total > 0", lambda r: len(r) >= 4, 60)
        with open(go, "w"):
            pass
        assert run.wait(timeout=120) == 0, run.stdout.read().decode()[-2000:]
        assert len(live) >= 4 and all(v > 0 for v in live.values()), live
        a = Access([runs])
        n = a.tasks(None, {}, limit=1, count=True)["total"]
        acts = a.stats("activity")["items"]
        a.close()
        assert n > 0
        res = prom.wait_for("sum(flowcept_records_stored_total)",
                            lambda r: r and float(r[0]["value"][1]) == n, 60)
        assert float(res[0]["value"][1]) == n
        per = prom.query('sum by (activity) (flowcept_tasks{status="FINISHED"})')
        assert {r["metric"]["activity"]: int(float(r["value"][1])) for r in per} == \
            {r["activity"]: r["count"] for r in acts}
        assert float(prom.query("sum(flowcept_tasks_failed)")[0]["value"][1]) == 0
        # the rings were scraped by Prometheus too, while they lived
        seen = prom.query("max_over_time(flowcept_ring_records_captured_total[10m])")
        assert len(seen) >= 1 and all(float(r["value"][1]) > 0 for r in seen)
        # a rate needs two scrapes of the stored series, which may have just appeared
        rate = prom.wait_for("sum(rate(flowcept_records_stored_total[1m]))", bool, 30)
        assert rate and float(rate[0]["value"][1]) >= 0
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
        if prom is not None:
            prom.stop()
        stop(exporter)


def test_keeper_status_quarantine_spool_and_failures(run_data, tmp_path):
    """The exporter reads the keeper's status-file format (written by Keeper.write_status)
    and counts failed tasks and spool depth."""
    import shutil
    from flowcept.access.metrics import FlowceptCollector
    from flowcept.query.tasks import find_stores
    store = str(tmp_path / "store")
    shutil.copytree(find_stores(run_data["runs"])[-1], store)
    with open(os.path.join(store, "keeper-k1.status.json"), "w") as f:
        json.dump({"name": "k1", "pid": 1, "running": True, "updated": time.time(), "batches_in": 7,
                   "records_in": 70, "duplicates": 3, "rejected": 1, "acked": 11, "store_errors": 0,
                   "transport_errors": 0, "rejected_by_reason": {"crc": 1}}, f)
    spool = tmp_path / "spool" / "node1"
    spool.mkdir(parents=True)
    (spool / ("00" * 24 + ".batch")).write_bytes(b"x" * 100)
    col = FlowceptCollector(stores=[store], spool_dirs=[str(tmp_path / "spool")])
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    text = generate_latest(col.registry).decode()
    m = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            m.setdefault(s.name, []).append((s.labels, s.value))
    assert m["flowcept_keeper_duplicates_total"][0][1] == 3
    assert m["flowcept_keeper_records_in_total"][0][1] == 70
    assert m["flowcept_keeper_running"][0][1] == 1
    assert m["flowcept_tasks_failed"][0][1] == 1
    assert m["flowcept_quarantined_batches"][0][1] == 0
    assert m["flowcept_spool_batches"][0][1] == 1 and m["flowcept_spool_bytes"][0][1] == 100
    assert "flowcept_exporter_errors" not in m or all(v == 0 for _l, v in m["flowcept_exporter_errors"])
    # a second scrape reads no batch again and gives the same counts
    again = generate_latest(col.registry).decode()
    assert [x for x in again.splitlines() if x.startswith("flowcept_records_stored_total")] == \
        [x for x in text.splitlines() if x.startswith("flowcept_records_stored_total")]


def test_serve_metrics_endpoint(run_data):
    from access_support import start_server
    proc, base = start_server([run_data["runs"], "--metrics"])
    try:
        m = scrape(base + "/metrics")
    finally:
        stop(proc)
    assert sum(v for _l, v in m["flowcept_records_stored_total"]) == 148
    assert sum(v for _l, v in m["flowcept_tasks_failed"]) == 1
    by = {(lab["activity"], lab["status"]): v for lab, v in m["flowcept_tasks"]}
    assert by[("evaluate", "ERROR")] == 1 and by[("evaluate", "FINISHED")] == 2
