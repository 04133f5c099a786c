"""Dask capture on a real LocalCluster with process workers: Flowcept's way
(``Flowcept("dask", dask_client=client)``) stores the fields Flowcept 1.0.3
stores, and our lineage option on top."""
import os

import numpy as np
import pytest
from adapters_support import flowcept_yaml, read_back, stored_bodies

pytest.importorskip("distributed", reason="dask not installed: pip install 'flowcept[dask]'")
pytestmark = pytest.mark.slow


def dummy_func1(x):
    return x * 2


def dummy_func2(y):
    return y + y


def dummy_func3(z, w):
    return {"r": z + w}


def dummy_func4(x_obj):
    return {"z": x_obj["x"] * 2}


def pair(a, b):
    return a, b


def forced_error_func(x):
    raise Exception(f"This is a forced error: {x}")


def whoami(x):
    from flowcept.flowceptor.adapters.dask.dask_plugins import get_flowcept_task
    t = get_flowcept_task()
    return {"task_id": t.task_id, "workflow_id": t.workflow_id}


def _cluster():
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    return cluster, Client(cluster)


def test_flowcept_way_stores_what_1_0_3_stores(run_dir):
    from flowcept import Flowcept, FlowceptDaskWorkerAdapter
    cluster, client = _cluster()
    client.register_plugin(FlowceptDaskWorkerAdapter())    # before Flowcept, as Flowcept's docs do
    with Flowcept("dask", dask_client=client):
        wf, campaign = Flowcept.current_workflow_id, Flowcept.campaign_id
        o1 = client.submit(dummy_func1, 0.25)
        o2 = client.submit(dummy_func2, o1)
        o3 = client.submit(dummy_func3, 0.5, w=2)
        o4 = client.submit(forced_error_func, 7)
        o5 = client.submit(pair, 1, "b")
        o6 = client.map(dummy_func4, [{"x": 4, "batch_norm": False}, {"x": 6, "empty": ""}])
        o7 = client.submit(whoami, 1)
        assert o2.result() == 1.0 and o3.result() == {"r": 2.5} and o5.result() == (1, "b")
        assert [o.result() for o in o6] == [{"z": 8}, {"z": 12}]
        with pytest.raises(Exception, match="forced error: 7"):   # the task's own exception
            o4.result()
        assert o7.result() == {"task_id": o7.key, "workflow_id": wf}
        address = next(iter(client.scheduler_info()["workers"]))
        keys = [o.key for o in (o1, o2, o3, o4, o5, *o6)]
        client.close()
        cluster.close()
    recs = {r["body"]["task_id"]: r for r in stored_bodies(run_dir) if "task_id" in r["body"]}
    assert set(keys) <= set(recs)
    expect = {   # field by field, as 1.0.3 stores them (its LMDB store, same calls)
        o1.key: ("dummy_func1", {"x": 0.25}, {"arg0": 0.5}),
        o2.key: ("dummy_func2", {"y": o1.key}, {"arg0": 1.0}),   # a dependency by its key
        o3.key: ("dummy_func3", {"z": 0.5, "w": 2}, {"r": 2.5}),
        o5.key: ("pair", {"a": 1, "b": "b"}, {"arg0": 1, "arg1": "b"}),
        o6[0].key: ("dummy_func4", {"x_obj": {"x": 4, "batch_norm": False}}, {"z": 8}),
        o6[1].key: ("dummy_func4", {"x_obj": {"x": 6, "empty": ""}}, {"z": 12}),
    }
    for key, (activity, used, generated) in expect.items():
        r = recs[key]
        b = r["body"]
        assert (r["activity"], r["status"]) == (activity, "FINISHED")
        assert b["used"] == used and b["generated"] == generated
        assert b["workflow_id"] == wf and b["campaign_id"] == campaign
        assert b["address"] == address
        assert 0 < r["start_ns"] <= r["end_ns"]
        assert set(b) == {"task_id", "workflow_id", "campaign_id", "used", "generated", "address"}
    bad = recs[o4.key]
    assert (bad["activity"], bad["status"]) == ("forced_error_func", "ERROR")
    assert set(bad["body"]) == {"task_id", "workflow_id", "campaign_id", "used", "stderr", "address"}
    assert bad["body"]["stderr"]["exception"] == "Exception('This is a forced error: 7')"
    assert "forced_error_func" in bad["body"]["stderr"]["traceback"]
    # one workflow id for the run: the worker's records are in Flowcept's workflow
    assert len({recs[k]["workflow"] for k in keys}) == 1
    from flowcept.query.tasks import read_workflows
    wdoc = next(w for w in read_workflows(run_dir).values() if w.get("adapter_id") == "dask")
    assert wdoc["custom_metadata"]["n_workers"] == 1
    assert {"type", "id", "address", "services", "started", "workers"} <= set(wdoc["custom_metadata"]["scheduler"])
    # and Flowcept's reader finds them the way Flowcept's tests ask
    doc = Flowcept.db.query({"task_id": o2.key})[0]
    assert doc["workflow_id"] == wf and doc["used"] == {"y": o1.key} and doc["ended_at"] >= doc["started_at"]


def test_without_a_client_or_plugin(run_dir):
    """Flowcept('dask') takes the current client and registers the worker
    plugin itself when there is none; no client at all fails clearly."""
    from flowcept import Flowcept
    from flowcept.adapters.dask import DaskAdapter
    from flowcept.errors import ConfigError
    with pytest.raises(ConfigError, match="dask_client=client"):
        DaskAdapter(None).start()
    cluster, client = _cluster()
    with Flowcept("dask"):
        assert client.submit(dummy_func1, 21).result() == 42
        client.close()
        cluster.close()
    recs = [r for r in stored_bodies(run_dir) if r["activity"] == "dummy_func1"]
    assert len(recs) == 1 and recs[0]["body"]["generated"] == {"arg0": 42}


def test_telemetry_from_flowcept_settings(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", flowcept_yaml(
        tmp_path / "settings.yaml", telemetry_capture={"cpu": True, "mem": True, "process_info": True,
                                                        "per_cpu": False, "disk": False,
                                                        "network": False, "gpu": None}))
    from flowcept import Flowcept, FlowceptDaskWorkerAdapter
    cluster, client = _cluster()
    client.register_plugin(FlowceptDaskWorkerAdapter())
    with Flowcept("dask", dask_client=client):
        client.submit(dummy_func1, np.float64(2)).result()
        client.close()
        cluster.close()
    (r,) = [r for r in stored_bodies(run_dir) if r["activity"] == "dummy_func1"]
    for when in ("telemetry_at_start", "telemetry_at_end"):
        tel = r["body"][when]
        assert set(tel) == {"cpu", "memory", "process"}
        assert set(tel["cpu"]) == {"times_avg", "percent_all", "frequency"}
        assert set(tel["memory"]) == {"virtual", "swap"} and tel["memory"]["virtual"]["total"] > 0
        assert tel["process"]["pid"] != os.getpid()          # taken in the worker process
    assert r["body"]["telemetry_at_start"]["process"]["pid"] == r["body"]["telemetry_at_end"]["process"]["pid"]


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def boom(x):
    raise ValueError(f"bad {x}")


@pytest.mark.parametrize("which", ["worker", "scheduler"])
def test_lineage_option_every_task_one_record(run_dir, session, which):
    from distributed import Client, LocalCluster
    from flowcept.adapters.dask import (FlowceptDaskSchedulerAdapter, FlowceptDaskWorkerAdapter,
                                        register_dask_workflow)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        wf = register_dask_workflow(client, "dask-test", session=session,
                                    scheduler=(which == "scheduler"), lineage=True)
        incs = [client.submit(inc, i, key=f"inc-{i}") for i in range(6)]
        total = client.submit(add, *incs, key="add-total")
        bad = client.submit(boom, total, key="boom-1")
        assert total.result(timeout=60) == sum(range(1, 7))
        with pytest.raises(ValueError, match="bad 21"):     # the task's own exception, unchanged
            bad.result(timeout=60)
        workers = set(client.scheduler_info()["workers"])
    read_back(run_dir)
    by = {r["body"]["task_id"]: r for r in stored_bodies(run_dir) if "task_id" in r["body"]}
    assert set(by) == {f"inc-{i}" for i in range(6)} | {"add-total", "boom-1"}
    plugin = FlowceptDaskWorkerAdapter(session, workflow_id=wf)
    for k, r in by.items():
        assert r["task"] == plugin.task_id(k) and r["body"]["address"] in workers
    assert by["inc-3"]["activity"] == "inc" and by["inc-3"]["status"] == "FINISHED"
    if which == "worker":   # arguments and results, as Flowcept's worker adapter records them
        assert by["inc-3"]["body"]["used"] == {"x": 3} and by["inc-3"]["body"]["generated"] == {"arg0": 4}
        assert by["add-total"]["body"]["generated"] == {"arg0": 21}
        assert by["boom-1"]["body"]["used"] == {"x": "add-total"}
    total = by["add-total"]
    assert total["body"]["dependencies"] == sorted(f"inc-{i}" for i in range(6))
    assert total["parent"] == by["inc-0"]["task"]
    assert by["boom-1"]["status"] == "ERROR" and "bad 21" in by["boom-1"]["body"]["stderr"]["exception"]
    assert by["boom-1"]["parent"] == total["task"]
    from flowcept.query.tasks import find_stores
    # worker plugin: recorded inside the worker processes (their own sessions and stores)
    assert len(find_stores(run_dir)) == (1 + 2 if which == "worker" else 1)
    assert FlowceptDaskSchedulerAdapter(session, workflow_id=wf).task_id("inc-0") == plugin.task_id("inc-0")
