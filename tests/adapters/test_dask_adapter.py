"""Dask instrumentation on a real LocalCluster with process workers."""
import os

import pytest
from adapters_support import read_back

pytest.importorskip("distributed", reason="dask not installed: pip install 'flowcept[dask]'")
pytestmark = pytest.mark.slow


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def boom(x):
    raise ValueError(f"bad {x}")


def _graph(client):
    incs = [client.submit(inc, i, key=f"inc-{i}") for i in range(6)]
    total = client.submit(add, *incs, key="add-total")
    bad = client.submit(boom, total, key="boom-1")
    assert total.result(timeout=60) == sum(range(1, 7))
    with pytest.raises(ValueError, match="bad 21"):     # the task's own exception, unchanged
        bad.result(timeout=60)


@pytest.mark.parametrize("which", ["worker", "scheduler"])
def test_every_task_one_record_with_lineage(run_dir, session, which):
    from distributed import Client, LocalCluster
    from flowcept.adapters.dask import (FlowceptDaskSchedulerAdapter, FlowceptDaskWorkerAdapter,
                                        register_dask_workflow)
    from flowcept.record.layout import format_task_id
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        wf = register_dask_workflow(client, "dask-test", session=session,
                                    scheduler=(which == "scheduler"), telemetry=(which == "worker"))
        _graph(client)
        workers = set(client.scheduler_info()["workers"])
    tasks = read_back(run_dir)
    recs = [t for t in tasks if t.get("custom_metadata", {}).get("adapter") == "dask"]
    assert len(recs) == 8
    by = {t["custom_metadata"]["key"]: t for t in recs}
    assert set(by) == {f"inc-{i}" for i in range(6)} | {"add-total", "boom-1"}
    plugin = FlowceptDaskWorkerAdapter(session, workflow_id=wf)
    for k, t in by.items():
        assert t["task_id"] == format_task_id(wf, plugin.task_id(k))
        assert t["custom_metadata"]["worker"] in workers
        assert isinstance(t["custom_metadata"]["thread"], int)
        assert 0 < t["start_ns"] <= t["end_ns"]
    assert by["inc-3"]["activity_id"] == "inc" and by["inc-3"]["status"] == "FINISHED"
    if which == "worker":   # arguments and results, as Flowcept's worker adapter records them
        assert by["inc-3"]["used"]["x"] == 3 and by["inc-3"]["generated"] == {"return": 4}
        assert by["add-total"]["generated"] == {"return": 21}
        assert by["add-total"]["used"]["arg_5"] == {"dask_key": "inc-5"}
        assert by["boom-1"]["used"]["x"] == {"dask_key": "add-total"}
    total = by["add-total"]
    assert total["used"]["dependencies"] == sorted(f"inc-{i}" for i in range(6))
    assert total["custom_metadata"]["dependency_task_ids"] == [by[f"inc-{i}"]["task_id"]
                                                               for i in range(6)]
    assert total["parent_task_id"] == by["inc-0"]["task_id"]
    assert by["boom-1"]["status"] == "ERROR" and "bad 21" in by["boom-1"]["custom_metadata"]["error"]
    assert by["boom-1"]["parent_task_id"] == total["task_id"]
    assert min(by[f"inc-{i}"]["start_ns"] for i in range(6)) <= total["start_ns"]
    if which == "worker":   # telemetry at start and end, taken in the worker processes
        tel = by["inc-0"]["custom_metadata"]
        assert tel["telemetry_at_start"]["process"]["pid"] == tel["telemetry_at_end"]["process"]["pid"]
        assert tel["telemetry_at_end"]["process"]["pid"] != os.getpid()
    from flowcept.query.tasks import find_stores
    # worker plugin: recorded inside the worker processes (their own sessions and stores)
    assert len(find_stores(run_dir)) == (1 + 2 if which == "worker" else 1)
    assert FlowceptDaskSchedulerAdapter(session, workflow_id=wf).task_id("inc-0") == plugin.task_id("inc-0")
