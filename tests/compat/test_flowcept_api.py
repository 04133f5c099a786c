"""Flowcept 1.0.3's offline instrumentation and API tests, as behaviour
checks against this package (our store is always on, so the checks that
need a database run too)."""
import asyncio
import json
import os
import uuid

import pytest

from flowcept import Flowcept, FlowceptLoop, FlowceptTask, flowcept_task
from flowcept.commons.vocabulary import Status


def tasks_of(activity):
    return Flowcept.db.task_query(filter={"workflow_id": Flowcept.current_workflow_id,
                                          "activity_id": activity})


# -- explicit tasks ---------------------------------------------------------------------
def test_explicit_task_capture_two_workflows():
    with Flowcept():
        with FlowceptTask(used={"a": 1}) as t:
            t.end(generated={"b": 2})
    first = Flowcept.current_workflow_id
    task = Flowcept.db.get_tasks_from_current_workflow()[0]
    assert task["used"]["a"] == 1 and task["generated"]["b"] == 2
    assert task["status"] == Status.FINISHED.value and task["type"] == "task"

    with Flowcept():
        with FlowceptTask(used={"a": 1}):
            pass
    assert Flowcept.current_workflow_id != first
    (task,) = Flowcept.db.get_tasks_from_current_workflow()
    assert task["used"]["a"] == 1 and task["status"] == "FINISHED"
    assert "generated" not in task


def test_custom_metadata_not_serializable_is_sanitized_in_buffer():
    with Flowcept():
        with FlowceptTask(used={"a": 1}, custom_metadata={"obj": object()}) as t:
            t.end(generated={"b": 2})
        tasks = [m for m in Flowcept.buffer if m.get("type") == "task"]   # inside the run
        assert tasks
    value = tasks[-1]["custom_metadata"]["obj"]
    assert isinstance(value, str) and value.startswith("object_instance_id_")


def test_agent_fields_are_kept_with_send():
    with Flowcept(start_persistence=False):
        FlowceptTask(activity_id="agent_action", agent_id="agent-1", agent_name="Planner",
                     source_agent_id="agent-0", source_agent_name="Coordinator").send()
        task = [m for m in Flowcept.buffer if m.get("type") == "task"][-1]
    assert task["agent_id"] == "agent-1" and task["agent_name"] == "Planner"
    assert task["source_agent_id"] == "agent-0" and task["source_agent_name"] == "Coordinator"
    assert task["started_at"] == task["ended_at"]   # a message: no duration


def test_custom_tasks_buffer_has_workflow_and_three_tasks():
    f = Flowcept(start_persistence=False, save_workflow=True, workflow_name="MyFirstWorkflow").start()
    agent = str(uuid.uuid4())
    FlowceptTask(activity_id="super_func1", used={"x": 1}, agent_id=agent, tags=["tag1"]).send()
    with FlowceptTask(activity_id="super_func2", used={"y": 1}, agent_id=agent, tags=["tag2"]) as t2:
        t2.end(generated={"o": 3})
    t3 = FlowceptTask(activity_id="super_func3", used={"z": 1}, agent_id=agent, tags=["tag3"])
    t3.end(generated={"w": 1})
    wf = Flowcept.current_workflow_id
    f.stop()
    msgs = Flowcept.read_buffer_file(workflow_id=wf)   # no dump file: from the store
    assert len(msgs) == 5   # workflow start, 3 tasks, workflow end
    assert msgs[0]["type"] == "workflow" and msgs[0]["name"] == "MyFirstWorkflow"
    assert msgs[0]["status"] == "RUNNING" and "ended_at" not in msgs[0]
    assert msgs[4]["status"] == "FINISHED" and msgs[4]["ended_at"] >= msgs[4]["started_at"]
    assert [m["activity_id"] for m in msgs[1:4]] == ["super_func1", "super_func2", "super_func3"]
    assert [m["tags"] for m in msgs[1:4]] == [["tag1"], ["tag2"], ["tag3"]]
    assert all(m["agent_id"] == agent for m in msgs[1:4])


def test_data_bytes_and_end_custom_metadata():
    with Flowcept():
        with FlowceptTask(used={"a": 1}) as t:
            t.end(generated={"b": 2}, data=b"\x89PNG...", custom_metadata={"mime_type": "image/png"})
            t.send()   # after end: nothing more is sent
        with FlowceptTask(used={"a": 1}) as t:
            t.end(generated={"c": 2}, data=b"%PDF", custom_metadata={"mime_type": "application/pdf"})
        buf = Flowcept.buffer
        assert len(buf) == 3
        assert buf[1]["data"] and buf[1]["custom_metadata"]["mime_type"] == "image/png"


def test_constructor_end_fields_end_the_task_and_other_statuses():
    with Flowcept():
        FlowceptTask(activity_id="done_at_once", used={"x": 1}, generated={"y": 2}, stdout="hi")
        t = FlowceptTask(activity_id="waiting")
        t.end(status=Status.WAITING)
        FlowceptTask(activity_id="failed", stderr="boom", status=Status.ERROR)
    (d,) = tasks_of("done_at_once")
    assert d["generated"] == {"y": 2} and d["stdout"] == "hi" and d["status"] == "FINISHED"
    assert tasks_of("waiting")[0]["status"] == "WAITING"
    (e,) = tasks_of("failed")
    assert e["status"] == "ERROR" and e["stderr"] == "boom"


def test_explicit_task_custom_ids_and_parent():
    with Flowcept():
        parent = FlowceptTask(task_id="my-parent", activity_id="outer")
        FlowceptTask(activity_id="inner", parent_task_id="my-parent").send()
        parent.end()
    (inner,) = tasks_of("inner")
    (outer,) = tasks_of("outer")
    assert outer["task_id"] == "my-parent" and inner["parent_task_id"] == "my-parent"


def test_exception_in_task_block_is_error_and_propagates():
    with Flowcept():
        with pytest.raises(ZeroDivisionError):
            with FlowceptTask(activity_id="div"):
                1 / 0
    (t,) = tasks_of("div")
    assert t["status"] == "ERROR" and "division by zero" in t["stderr"]


# -- the decorator ------------------------------------------------------------------------
def test_decorator_generated_naming_like_flowcept():
    @flowcept_task
    def plain(x):
        return x + 1

    @flowcept_task(output_names="y")
    def one(x):
        return x * 2

    @flowcept_task(output_names=["a", "b"])
    def two(x):
        return x, -x

    @flowcept_task
    def as_dict(x):
        return {"k": x}

    with Flowcept():
        assert plain(1) == 2 and one(2) == 4 and two(3) == (3, -3) and as_dict(5) == {"k": 5}
    assert tasks_of("plain")[0]["generated"] == {"arg_0": 2}
    assert tasks_of("one")[0]["generated"] == {"y": 4}
    assert tasks_of("two")[0]["generated"] == {"a": 3, "b": -3}
    assert tasks_of("as_dict")[0]["generated"] == {"k": 5}
    assert tasks_of("plain")[0]["used"] == {"x": 1}


def test_decorator_options_tags_metadata_subtype_agent():
    @flowcept_task(tags=["t1", "t2"], custom_metadata={"owner": "me"}, subtype="train",
                   agent_id="agent-7")
    def f(x):
        return x

    with Flowcept():
        f(1)
    (t,) = tasks_of("f")
    assert t["tags"] == ["t1", "t2"] and t["custom_metadata"] == {"owner": "me"}
    assert t["subtype"] == "train" and t["agent_id"] == "agent-7"
    assert t["campaign_id"] == Flowcept.campaign_id and "utc_timestamp" in t


def test_decorator_args_handler():
    def handler(*args, **kwargs):
        out = {f"pos_{i}": a for i, a in enumerate(args)}
        out.update({k: str(v) for k, v in kwargs.items()})
        return out

    @flowcept_task(args_handler=handler)
    def g(a, b=3):
        return a + b

    with Flowcept():
        assert g(1) == 4
    (t,) = tasks_of("g")
    assert t["used"] == {"a": "1", "b": "3"}   # bound with defaults, as Flowcept does
    assert t["generated"] == {"pos_0": 4}


def test_decorator_error_is_recorded_and_raised():
    @flowcept_task
    def bad(x):
        raise ValueError(f"bad {x}")

    with Flowcept():
        with pytest.raises(ValueError, match="bad 1"):
            bad(1)
    (t,) = tasks_of("bad")
    assert t["status"] == Status.ERROR.value and "bad 1" in t["stderr"]
    assert "generated" not in t


def test_async_decorator():
    @flowcept_task(output_names="r")
    async def work(x):
        await asyncio.sleep(0)
        return x * 3

    with Flowcept():
        assert asyncio.run(work(2)) == 6
    assert tasks_of("work")[0]["generated"] == {"r": 6}


def test_telemetry_decorator_and_lightweight():
    from flowcept import lightweight_flowcept_task, telemetry_flowcept_task
    pytest.importorskip("psutil", reason="telemetry is read with psutil")

    @telemetry_flowcept_task
    def tel(x):
        return x

    @lightweight_flowcept_task
    def light(x):
        return x

    with Flowcept():
        tel(1)
        light(2)
    (t,) = tasks_of("tel")
    assert "percent_all" in t["telemetry_at_start"]["cpu"]   # Flowcept's telemetry shape
    assert t["telemetry_at_end"]["process"]["pid"] == os.getpid()
    assert "telemetry_at_start" not in tasks_of("light")[0]
    assert tasks_of("light")[0]["used"] == {"x": 2}


# -- Flowcept(...) --------------------------------------------------------------------------
def test_every_flowcept_keyword_is_accepted_and_uuid_workflow_id_is_kept():
    wid = str(uuid.uuid4())

    @flowcept_task
    def f(x):
        return x

    with Flowcept(interceptors=["instrumentation"], bundle_exec_id="b1", campaign_id="camp",
                  workflow_id=wid, workflow_name="wf", workflow_description="d",
                  workflow_subtype="sub", workflow_args={"n": 1}, agent_id="ag",
                  parent_workflow_id="p-wf", start_persistence=False, check_safe_stops=False,
                  save_workflow=True, delete_buffer_file=False) as fc:
        assert Flowcept.current_workflow_id == wid and Flowcept.campaign_id == "camp"
        f(1)
    assert isinstance(fc.workflow_id, int)
    (t,) = Flowcept.db.task_query(filter={"workflow_id": wid})
    assert t["campaign_id"] == "camp" and t["activity_id"] == "f"
    w = Flowcept.db.get_workflow_object(wid)
    assert (w.workflow_id, w.name, w.campaign_id, w.used) == (wid, "wf", "camp", {"n": 1})
    assert w.workflow_description == "d" and w.subtype == "sub" and w.parent_workflow_id == "p-wf"
    assert w.agent_id == "ag" and w.status == Status.FINISHED
    # the same string id always maps to the same workflow
    with Flowcept(workflow_id=wid):
        f(2)
    assert len(Flowcept.db.task_query(filter={"workflow_id": wid})) == 2


def test_interceptors_positional_and_generated_ids():
    with Flowcept("instrumentation") as fc:
        pass
    assert fc.workflow_name is None and fc.interceptors == "instrumentation"
    uuid.UUID(Flowcept.current_workflow_id)   # generated as in Flowcept
    uuid.UUID(Flowcept.campaign_id)
    with pytest.raises(Exception, match="unknown adapter 'no-such-interceptor'"):
        Flowcept("no-such-interceptor").start()


def test_services():
    assert Flowcept.services_alive() is True
    assert Flowcept.services_status() == {}   # no MQ, no database in Flowcept's default settings


def test_flowcept_workflow_decorator():
    from flowcept.instrumentation.flowcept_decorator import flowcept

    @flowcept_task
    def step(x):
        return x

    @flowcept
    def main_fn():
        return step(4)

    assert main_fn() == 4
    (t,) = Flowcept.db.task_query(filter={"activity_id": "step"})
    assert t["used"] == {"x": 4} and t["workflow_id"] == Flowcept.current_workflow_id


# -- loops ------------------------------------------------------------------------------------
def test_loop_int_iterator_and_len():
    import itertools
    with Flowcept():
        loop = FlowceptLoop(3, loop_name="n")
        assert len(loop) == 3 and list(loop) == [0, 1, 2]
        it = FlowceptLoop(itertools.islice(itertools.count(), 2), loop_name="it", items_length=2)
        assert len(it) == 2
        assert next(it) == 0 and next(it) == 1
        with pytest.raises(StopIteration):
            next(it)
        off = FlowceptLoop(range(4), loop_name="off", capture_enabled=False)
        for _ in off:
            off.end_iter({"ignored": True})
        growing = FlowceptLoop(itertools.count(), loop_name="conv", item_name="step")
        for step in growing:   # an iterator that never ends: iterated as it comes
            growing.end_iter({"step": step})
            if step == 2:
                break
    docs = Flowcept.db.get_tasks_from_current_workflow()
    acts = sorted(d["activity_id"] for d in docs)
    assert acts == ["conv_iteration"] * 3 + ["it_iteration"] * 2 + ["n_iteration"] * 3
    its = [d for d in docs if d["activity_id"] == "n_iteration"]
    assert [d["used"] for d in its] == [{"i": 0, "item": 0}, {"i": 1, "item": 1}, {"i": 2, "item": 2}]


def test_lightweight_loop_records_each_iteration():
    from flowcept.instrumentation.flowcept_loop import FlowceptLightweightLoop
    with Flowcept():
        loop = FlowceptLightweightLoop(range(5), loop_name="light", item_name="k")
        for i in loop:
            loop.end_iter({"v": i})
    its = tasks_of("light_iteration")
    assert [t["generated"] for t in its] == [{"v": i} for i in range(5)]
    assert [t["used"] for t in its] == [{"i": i, "k": i} for i in range(5)]
    assert not tasks_of("light")


# -- Flowcept.db ------------------------------------------------------------------------------
@pytest.fixture
def populated():
    @flowcept_task(output_names="loss")
    def train(epoch, lr):
        return 1.0 / (epoch + 1)

    with Flowcept(workflow_name="training", campaign_id="c") as fc:
        for e in range(4):
            train(e, 0.1 if e < 2 else 0.01)
    return Flowcept.current_workflow_id


def test_query_projection_sort_limit(populated):
    db = Flowcept.db
    docs = db.query(filter={"activity_id": "train"}, projection=["used.epoch", "generated"],
                    sort=[("used.epoch", db.DESCENDING)], limit=2)
    assert docs == [{"used": {"epoch": 3}, "generated": {"loss": 0.25}},
                    {"used": {"epoch": 2}, "generated": {"loss": 1 / 3}}]
    assert len(db.task_query({"generated.loss": {"$lt": 0.4}})) == 2
    assert db.query(filter={}, collection="workflows")[0]["name"] == "training"


def test_query_aggregation(populated):
    rows = Flowcept.db.task_query(filter={"activity_id": "train"}, projection=["used.lr"],
                                  aggregation=[("max", "generated.loss"), ("count", "task_id")])
    by_lr = {r["used.lr"]: r for r in rows}
    assert by_lr[0.1]["max_generated_loss"] == 1.0 and by_lr[0.1]["count_task_id"] == 2
    assert by_lr[0.01]["max_generated_loss"] == pytest.approx(1 / 3)


def test_to_df_and_dump_to_file(populated, tmp_path):
    pytest.importorskip("pandas", reason="to_df needs pandas")
    df = Flowcept.db.to_df(filter={"activity_id": "train"})
    assert len(df) == 4 and "generated.loss" in df.columns
    out = Flowcept.db.dump_to_file(filter={"workflow_id": populated},
                                   output_file=str(tmp_path / "tasks.json"))
    assert len(json.load(open(out))) == 4
    z = Flowcept.db.dump_to_file(output_file=str(tmp_path / "t.csv"), export_format="csv",
                                 should_zip=True)
    assert z.endswith(".zip") and os.path.exists(z)


def test_get_tasks_recursive():
    @flowcept_task
    def leaf(i):
        return i

    @flowcept_task
    def mid(n):
        return [leaf(i) for i in range(n)]

    with Flowcept():
        mid(3)
        leaf(9)
    wf = Flowcept.current_workflow_id
    got = Flowcept.db.get_tasks_recursive(wf)
    assert sorted(t["activity_id"] for t in got) == ["leaf"] * 4 + ["mid"]
    top = Flowcept.db.get_tasks_recursive(wf, max_depth=0)
    assert sorted(t["activity_id"] for t in top) == ["leaf", "mid"]


# -- the buffer file ------------------------------------------------------------------------
def test_buffer_dump_read_delete(tmp_path):
    @flowcept_task
    def f(x):
        return x

    with Flowcept(save_workflow=False) as fc:
        f(1)
        f(2)
        assert len(fc.get_buffer()) == 2
        path = fc.dump_buffer(str(tmp_path / "buf.jsonl"))
    lines = open(path).read().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["used"] == {"x": 1}
    assert Flowcept.read_buffer_file(path) == [json.loads(x) for x in lines]
    pytest.importorskip("pandas")
    df = Flowcept.read_buffer_file(path, return_df=True, normalize_df=True)
    assert list(df["used.x"]) == [1, 2]
    Flowcept.delete_buffer_file(path)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError, match="dump_buffer"):
        Flowcept.read_buffer_file(path)


# -- import paths ---------------------------------------------------------------------------
def test_flowcept_import_paths():
    from flowcept.commons.flowcept_logger import FlowceptLogger
    from flowcept.flowcept_api.db_api import DBAPI
    from flowcept.flowcept_api.flowcept_controller import Flowcept as F2
    from flowcept.instrumentation.flowcept_loop import FlowceptLoop as L2
    from flowcept.instrumentation.flowcept_task import flowcept_task as ft2
    from flowcept.instrumentation.task_capture import FlowceptTask as T2
    from flowcept import configs
    import logging
    assert F2 is Flowcept and L2 is FlowceptLoop and ft2 is flowcept_task and T2 is FlowceptTask
    assert isinstance(Flowcept.db, DBAPI)
    assert FlowceptLogger() is logging.getLogger("flowcept")
    assert configs.INSTRUMENTATION_ENABLED is True and configs.LMDB_ENABLED is False
    assert configs.MONGO_ENABLED is False and configs.KVDB_ENABLED is False
    assert configs.SETTINGS_PATH == "FLOWCEPT_DEFAULT_SETTINGS"   # no settings file
    assert Status.get_finished_statuses() == [Status.FINISHED, Status.ERROR]
    with pytest.raises(AttributeError):
        configs.NOT_A_SETTING


# -- Flowcept's decorator test module, as behaviour checks ---------------------------------
def test_decorated_functions_flowcept_counts_and_names():
    pd = pytest.importorskip("pandas")

    @flowcept_task
    def static(df):
        return pd.DataFrame([3])

    @flowcept_task
    def static2(x):
        return {"y": 2}

    @flowcept_task(output_names="z")
    def static3(x, y):
        return 5

    @flowcept_task(output_names=("z", "w"))
    def static4(x, y):
        return 6, 7

    with Flowcept():
        static(df=pd.DataFrame([1]))
        static2(x=1)
        static2(2)
        with pytest.raises(TypeError):
            static3(3, x=4)   # does not bind: Flowcept records no task for it
        static3(3, y=4)
        static4(3, y=4)
    tasks = Flowcept.db.get_tasks_from_current_workflow()
    assert len(tasks) == 5
    by = {}
    for t in tasks:
        by.setdefault(t["activity_id"], []).append(t)
    assert len(by["static"][0]["used"]) == 1 and "arg_0" in by["static"][0]["generated"]
    assert all(list(t["used"]) == ["x"] and t["generated"]["y"] == 2 for t in by["static2"])
    assert by["static3"][0]["used"] == {"x": 3, "y": 4} and by["static3"][0]["generated"] == {"z": 5}
    assert by["static4"][0]["generated"] == {"z": 6, "w": 7}
    # our own reader keeps the failed call
    from flowcept import read_tasks
    from flowcept.config import load_config
    ours = [t for t in read_tasks(load_config().run_dir) if t["activity_id"] == "static3"]
    assert sorted(t["status"] for t in ours) == ["ERROR", "FINISHED"]


def test_argparse_namespace_arguments_read_as_fields():
    import argparse

    @flowcept_task
    def process_arguments_task(known_args, unknown_args):
        return None

    known = argparse.Namespace(a=123, b="abc")
    with Flowcept():
        process_arguments_task(known, ["--unknown_arg", "unk", "['a']"])
    task = Flowcept.db.get_tasks_from_current_workflow()[0]
    assert task["status"] == Status.FINISHED.value
    assert task["used"]["known_args"] == {"a": 123, "b": "abc"}
    assert task["used"]["unknown_args"] == ["--unknown_arg", "unk", "['a']"]


def test_lightweight_decorated_method_and_no_args():
    from flowcept import lightweight_flowcept_task

    class C:
        @lightweight_flowcept_task
        def method(self, x):
            return {"y": 2}

    @lightweight_flowcept_task
    def none():
        return [2]

    with Flowcept():
        C().method(x=0.1)
        none()
    tasks = Flowcept.db.query({"workflow_id": Flowcept.current_workflow_id})
    assert len(tasks) == 2 and all(t["task_id"] for t in tasks)
    assert [t["used"] for t in tasks if t["activity_id"] == "method"] == [{"x": 0.1}]


def test_dump_buffer_in_offline_mode_first_line_is_a_message(tmp_path):
    @flowcept_task
    def f(x):
        return {"y": x}

    path = tmp_path / "flowcept_buffer.jsonl"
    with Flowcept(start_persistence=False) as fc:
        f(x=1)
        fc.dump_buffer(path=str(path))
    first = path.read_bytes().splitlines()[0]
    assert b'"type":"workflow"' in first   # compact, the workflow start first
    assert [m["type"] for m in Flowcept.read_buffer_file(str(path))] == ["workflow", "task"]


def test_workflow_id_argument_of_a_decorated_call_and_inserted_workflow():
    from flowcept.commons.flowcept_dataclasses.workflow_object import WorkflowObject
    from flowcept.commons.utils import assert_by_querying_tasks_until
    from flowcept.flowcept_api.db_api import DBAPI

    @flowcept_task
    def sum_one(n, workflow_id=None):
        return n + 1

    wf_id = str(uuid.uuid4())
    with Flowcept():
        DBAPI().insert_or_update_workflow(WorkflowObject(workflow_id=wf_id, name="inserted"))
        sum_one(sum_one(3, workflow_id=wf_id), workflow_id=wf_id)
    assert assert_by_querying_tasks_until({"workflow_id": wf_id},
                                          condition_to_evaluate=lambda docs: len(docs) == 2)
    docs = Flowcept.db.task_query({"workflow_id": wf_id})
    assert [d["used"] for d in docs] == [{"n": 3}, {"n": 4}]
    assert Flowcept.db.get_workflow_object(wf_id).name == "inserted"
    assert not assert_by_querying_tasks_until({"workflow_id": "nope"}, max_trials=2, max_time=0.2)


def test_insert_or_update_task():
    from flowcept.commons.flowcept_dataclasses.task_object import TaskObject
    with Flowcept():
        t = TaskObject()
        t.task_id, t.activity_id, t.used, t.generated = "t-1", "ins", {"a": 1}, {"b": 2}
        Flowcept.db.insert_or_update_task(t)
    (t,) = tasks_of("ins")
    assert t["task_id"] == "t-1" and t["used"] == {"a": 1} and t["generated"] == {"b": 2}


def test_interceptor_names_resolve_through_the_registry_with_their_keywords():
    """Flowcept("dask", dask_client=client, workflow_name=...): the name is
    looked up among the registered adapters, and the keywords its constructor
    takes are passed to it."""
    from flowcept import registry

    class Recorder:
        made = []

        def __init__(self, session, dask_client=None):
            self.session, self.dask_client, self.running = session, dask_client, False

        @classmethod
        def from_session(cls, session, **kw):
            obj = cls(session, **kw)
            cls.made.append(obj)
            return obj

        def start(self, background=False):
            self.running = True
            return self

        def stop(self):
            self.running = False

    registry.register("adapter", "test-dask", Recorder)
    client = object()
    with Flowcept("test-dask", dask_client=client, workflow_name="x") as fc:
        (a,) = Recorder.made
        assert a.dask_client is client and a.running and fc._interceptor_instances == [a]
    assert not a.running
    (w,) = Flowcept.db.workflow_query({"workflow_id": Flowcept.current_workflow_id})
    assert w["name"] == "x" and w["interceptor_ids"] == ["instrumentation", "test-dask"]


def test_workflow_card_of_a_campaign_as_markdown_and_pdf(tmp_path):
    @flowcept_task
    def step(x):
        if x == 2:
            raise ValueError("two")
        return x

    for name in ("first", "second"):
        with Flowcept(workflow_name=name, campaign_id="camp-1"):
            for x in range(3):
                try:
                    step(x)
                except ValueError:
                    pass
    md = Flowcept.generate_report(campaign_id="camp-1", output_path=str(tmp_path / "card.md"))
    text = (tmp_path / "card.md").read_text()
    assert md["workflows"] == 2 and md["tasks"] == 6 and md["input_mode"] == "db"
    assert md["activities"]["step"] == {"count": 6, "FINISHED": 4, "ERROR": 2,
                                        "total_s": md["activities"]["step"]["total_s"]}
    assert "first" in text and "second" in text and "| step | 6 | 4 | 2 |" in text
    pdf = Flowcept.generate_report(format="pdf", campaign_id="camp-1",
                                   output_path=str(tmp_path / "card.pdf"))
    data = (tmp_path / "card.pdf").read_bytes()
    assert pdf["format"] == "pdf" and data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
    assert b"(| step | 6 | 4 | 2 |" in data   # the card's lines, as text in the page
    xref = int(data.rsplit(b"startxref", 1)[1].split()[0])   # every object where xref says
    rows = data[xref:].split(b"\n")[3:]
    for n, row in enumerate(rows[:int(data[xref:].split(b"\n")[1].split()[1]) - 1], 1):
        assert data[int(row[:10]):].startswith(b"%d 0 obj" % n)
    with pytest.raises(ValueError, match="workflow_card supports format"):
        Flowcept.generate_report(format="docx", campaign_id="camp-1")


def test_explicit_task_with_odd_arguments_never_raises():
    class Hostile:
        def __str__(self):
            raise RuntimeError("no text")

        __repr__ = __str__

    with Flowcept():
        t = FlowceptTask(activity_id="odd", started_at="not a time", parent_task_id=Hostile(),
                         workflow_id=12.5, used={"h": Hostile()})
        t.end(ended_at=object(), generated={"ok": 1})
    (d,) = Flowcept.db.task_query({"activity_id": "odd"})
    assert d["generated"] == {"ok": 1} and d["ended_at"] >= d["started_at"]
    assert d["used"]["h"].startswith("Hostile_instance_id_")
