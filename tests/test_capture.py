"""Capture API end to end on the embedded default: decorated calls -> ring
-> drain -> LMDB -> read_tasks."""
import asyncio
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from flowcept import Flowcept, FlowceptLoop, FlowceptTask, flowcept_task, read_tasks, read_workflows
from flowcept.capture import session as runtime


def by_activity(tasks):
    out = {}
    for t in tasks:
        out.setdefault(t["activity_id"], []).append(t)
    return out


def test_used_generated_and_ids(run_dir):
    @flowcept_task
    def add(x, y=10):
        return x + y

    with Flowcept(workflow_name="w1", campaign_id="c1") as fc:
        assert add(1, y=2) == 3
        assert add(5) == 15
        wf = fc.workflow_id
    tasks = read_tasks(run_dir)
    assert len(tasks) == 2
    assert tasks[0]["used"] == {"x": 1, "y": 2} and tasks[0]["generated"] == {"return": 3}
    assert tasks[1]["used"] == {"x": 5, "y": 10}   # defaults applied, as Flowcept records them
    assert all(t["status"] == "FINISHED" and t["workflow_id"] == f"{wf:016x}" for t in tasks)
    assert len({t["task_id"] for t in tasks}) == 2
    assert all(t["end_ns"] >= t["start_ns"] > 0 for t in tasks)
    wfs = read_workflows(run_dir)
    doc = wfs[f"{wf:016x}"]
    assert doc["name"] == "w1" and doc["campaign_id"] == "c1" and doc["ended_at"] >= doc["started_at"]


def test_output_names_tags_metadata(run_dir):
    @flowcept_task(output_names=["q", "r"], tags=["math"], custom_metadata={"v": 1})
    def divmod_(a, b):
        return divmod(a, b)

    with Flowcept():
        divmod_(7, 2)
    (t,) = read_tasks(run_dir)
    assert t["generated"] == {"q": 3, "r": 1}
    assert t["tags"] == ["math"] and t["custom_metadata"] == {"v": 1}


def test_exception_recorded_and_reraised(run_dir):
    @flowcept_task
    def bad(x):
        raise KeyError("nope")

    with Flowcept():
        with pytest.raises(KeyError):
            bad(1)
    (t,) = read_tasks(run_dir)
    assert t["status"] == "ERROR" and t["error"]["type"] == "builtins.KeyError"
    assert "nope" in t["error"]["message"] and t["used"] == {"x": 1} and "generated" not in t


def test_parent_links_nested_and_block(run_dir):
    @flowcept_task
    def child(i):
        return i

    @flowcept_task
    def parent():
        return [child(i) for i in range(3)]

    with Flowcept():
        parent()
        with FlowceptTask(activity_id="block", used={"k": 1}) as blk:
            child(9)
            blk.end(generated={"done": True})
        child(10)
    tasks = by_activity(read_tasks(run_dir))
    p = tasks["parent"][0]
    b = tasks["block"][0]
    kids = tasks["child"]
    assert p["parent_task_id"] is None and b["parent_task_id"] is None
    assert sorted(k["used"]["i"] for k in kids if k["parent_task_id"] == p["task_id"]) == [0, 1, 2]
    assert [k["used"]["i"] for k in kids if k["parent_task_id"] == b["task_id"]] == [9]
    assert [k["parent_task_id"] for k in kids if k["used"]["i"] == 10] == [None]
    assert b["used"] == {"k": 1} and b["generated"] == {"done": True}


def test_async_tasks_keep_their_own_parents(run_dir):
    @flowcept_task
    async def leaf(i):
        await asyncio.sleep(0.001 * (3 - i))
        return i

    @flowcept_task
    async def branch(i):
        return await leaf(i)

    async def main():
        return await asyncio.gather(*(branch(i) for i in range(3)))

    with Flowcept():
        assert asyncio.run(main()) == [0, 1, 2]
    tasks = by_activity(read_tasks(run_dir))
    branches = {t["used"]["i"]: t["task_id"] for t in tasks["branch"]}
    for leaf_t in tasks["leaf"]:
        assert leaf_t["parent_task_id"] == branches[leaf_t["used"]["i"]]
        assert leaf_t["generated"] == {"return": leaf_t["used"]["i"]}


def test_threads_all_records_distinct_threads(run_dir):
    @flowcept_task
    def work(t, i):
        return t * 1000 + i

    @flowcept_task
    def outer(t):
        return [work(t, i) for i in range(500)]

    with Flowcept():
        ths = [threading.Thread(target=outer, args=(t,)) for t in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
    tasks = read_tasks(run_dir)
    works = [t for t in tasks if t["activity_id"] == "work"]
    assert len(works) == 2000
    assert sorted(t["generated"]["return"] for t in works) == sorted(
        t * 1000 + i for t in range(4) for i in range(500))
    outers = {t["task_id"]: t for t in tasks if t["activity_id"] == "outer"}
    assert len({t["thread_id"] for t in outers.values()}) == 4
    for w in works:   # parent is the outer task of the same thread
        assert outers[w["parent_task_id"]]["used"]["t"] == w["used"]["t"]
        assert outers[w["parent_task_id"]]["thread_id"] == w["thread_id"]


def test_non_serializable_arguments_do_not_break(run_dir, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_VALUE_DESCRIPTIONS", "rich")
    class Weird:
        __slots__ = ()

        def __repr__(self):
            return "Weird!"

    @flowcept_task
    def f(a, b, arr):
        return lambda: None

    with Flowcept():
        f(Weird(), threading.Lock(), np.ones((3, 4), np.float32))
    (t,) = read_tasks(run_dir)
    assert t["used"]["a"] == {"__type__": f"{__name__}.test_non_serializable_arguments_do_not_break.<locals>.Weird", "repr": "Weird!"}
    assert "lock" in t["used"]["b"]["repr"]
    assert t["used"]["arr"]["shape"] == [3, 4] and t["used"]["arr"]["mean"] == 1.0
    assert t["generated"]["return"]["__type__"] == "builtins.function"


def test_methods_skip_self_and_loop(run_dir):
    class Model:
        @flowcept_task
        def fit(self, epochs):
            return epochs * 2

    with Flowcept():
        Model().fit(3)
        loop = FlowceptLoop(range(3), loop_name="epochs", item_name="epoch")
        for e in loop:
            loop.end_iter({"loss": 1.0 / (e + 1)})
    tasks = by_activity(read_tasks(run_dir))
    assert tasks["fit"][0]["used"] == {"epochs": 3}
    assert "epochs" not in tasks   # Flowcept's loop: its iterations only
    its = tasks["epochs_iteration"]
    assert len(its) == 3 and all(i["parent_task_id"] is None for i in its)
    assert [i["used"] for i in its] == [{"i": k, "epoch": k} for k in range(3)]
    assert its[2]["generated"] == {"loss": pytest.approx(1 / 3)}


def test_loop_task_is_opt_in(run_dir, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_LOOP_TASK", "1")
    with Flowcept():
        loop = FlowceptLoop(range(3), loop_name="epochs", item_name="epoch")
        for e in loop:
            loop.end_iter({"loss": 1.0 / (e + 1)})
    tasks = by_activity(read_tasks(run_dir))
    (lp,) = tasks["epochs"]
    its = tasks["epochs_iteration"]
    assert lp["generated"] == {"iterations": 3} and len(its) == 3
    assert all(i["parent_task_id"] == lp["task_id"] for i in its)


def test_lazy_session_without_flowcept_context(run_dir):
    @flowcept_task
    def f(x):
        return x

    f(1)
    assert runtime.current() is not None
    runtime.end_session()
    assert [t["used"] for t in read_tasks(run_dir)] == [{"x": 1}]


def test_disabled_by_env_returns_function_unchanged(monkeypatch, run_dir):
    monkeypatch.setenv("FLOWCEPT_ENABLED", "0")

    def f(x):
        return x

    assert flowcept_task(f) is f
    with Flowcept() as fc:
        assert fc.session is None
    assert runtime.current() is None
    assert not os.path.exists(run_dir)


def test_plain_script_ends_in_store(tmp_path, run_dir):
    script = tmp_path / "app.py"
    script.write_text(
        "from flowcept import flowcept_task\n"
        "@flowcept_task\n"
        "def sq(x):\n    return x * x\n"
        "for i in range(1000):\n    sq(i)\n")
    subprocess.run([sys.executable, str(script)], check=True, timeout=60, env=os.environ)
    tasks = read_tasks(run_dir)
    assert sorted(t["generated"]["return"] for t in tasks) == sorted(i * i for i in range(1000))
    # the process removed its ring after draining it
    assert not any(f.endswith(".ring") for _, _, fs in os.walk(os.environ["FLOWCEPT_SHM_DIR"]) for f in fs)


def test_drops_are_counted_and_reported(run_dir, caplog):
    @flowcept_task
    def f(x):
        return x

    with Flowcept(ring_bytes=4096, full_policy="drop", drain_interval_ms=60000,
                  batch_latency_ms=60000) as fc:
        for i in range(500):   # far more than a 4 KiB ring holds between drains
            f(i)
        wf = f"{fc.workflow_id:016x}"
    stored = len(read_tasks(run_dir))
    doc = read_workflows(run_dir)[wf]["ring_rank0"]
    assert doc["policy"] == "drop" and doc["dropped"] > 0
    assert stored + doc["dropped"] == 500            # every call either stored or counted
    assert any("dropped" in r.message for r in caplog.records)
