"""Parent links across the two ways a task is opened: the compiled wrapper
(which keeps its task in a per-thread slot, not in the ContextVar) and the
Python ones (async tasks, FlowceptTask blocks, which set the ContextVar).
Every mix of nesting must give each task its innermost open task as parent."""
import asyncio
import threading

import pytest

from flowcept import Flowcept, FlowceptTask, flowcept_task, read_tasks
from flowcept.capture import task as capture_task
from flowcept.capture.task import current_parent

pytestmark = pytest.mark.skipif(capture_task._fastcapture is None,
                                reason="the compiled wrapper is not built (pure-Python install)")


def _num(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[-1], 16)


def _tasks(run_dir):
    out = {}
    for t in read_tasks(run_dir):
        out.setdefault(t["activity_id"], []).append(t)
    return out


def test_block_inside_compiled_task_inside_block(run_dir):
    seen = {}

    @flowcept_task
    def leaf(tag):
        seen[tag] = current_parent()
        return tag

    @flowcept_task
    def mid():
        leaf("in-mid")
        with FlowceptTask(activity_id="inner") as blk:
            leaf("in-inner")
            seen["inner-id"] = blk.task_id
        leaf("after-inner")
        return 1

    with Flowcept():
        assert current_parent() == 0
        with FlowceptTask(activity_id="outer"):
            mid()
        assert current_parent() == 0
    t = _tasks(run_dir)
    outer, mid_t, inner = t["outer"][0], t["mid"][0], t["inner"][0]
    leaves = {x["used"]["tag"]: x for x in t["leaf"]}
    assert mid_t["parent_task_id"] == outer["task_id"]
    assert inner["parent_task_id"] == mid_t["task_id"]
    assert leaves["in-mid"]["parent_task_id"] == mid_t["task_id"]
    assert leaves["in-inner"]["parent_task_id"] == inner["task_id"]
    assert leaves["after-inner"]["parent_task_id"] == mid_t["task_id"]
    # what Python readers see inside a compiled task is that task
    for tag in ("in-mid", "in-inner", "after-inner"):
        assert seen[tag] == _num(leaves[tag]["task_id"])
    assert seen["inner-id"] == _num(inner["task_id"])


def test_compiled_tasks_inside_async_tasks_and_an_event_loop_inside_a_compiled_task(run_dir):
    @flowcept_task
    def sync_leaf(i):
        return i

    @flowcept_task
    async def branch(i):
        await asyncio.sleep(0.001 * (3 - i))   # interleave the branches
        return sync_leaf(i)

    @flowcept_task
    def driver():
        async def main():
            return await asyncio.gather(*(branch(i) for i in range(3)))
        return asyncio.run(main())

    with Flowcept():
        assert driver() == [0, 1, 2]
    t = _tasks(run_dir)
    drv = t["driver"][0]
    branches = {b["used"]["i"]: b for b in t["branch"]}
    assert all(b["parent_task_id"] == drv["task_id"] for b in branches.values())
    for leaf in t["sync_leaf"]:
        assert leaf["parent_task_id"] == branches[leaf["used"]["i"]]["task_id"]


def test_a_thread_started_inside_a_compiled_task_has_no_parent(run_dir):
    @flowcept_task
    def work(i):
        return i

    @flowcept_task
    def spawner():
        th = threading.Thread(target=work, args=(1,))
        th.start()
        th.join()
        return work(2)

    with Flowcept():
        spawner()
    t = _tasks(run_dir)
    sp = t["spawner"][0]
    by_i = {w["used"]["i"]: w for w in t["work"]}
    assert by_i[2]["parent_task_id"] == sp["task_id"]
    assert by_i[1]["parent_task_id"] is None     # as with a ContextVar: threads start empty


def test_the_slot_is_restored_when_a_compiled_task_raises(run_dir):
    @flowcept_task
    def boom():
        raise ValueError("x")

    @flowcept_task
    def after():
        return current_parent()

    with Flowcept():
        with FlowceptTask(activity_id="block") as blk:
            with pytest.raises(ValueError):
                boom()
            assert current_parent() == blk.task_id
            after()
        assert current_parent() == 0
    t = _tasks(run_dir)
    assert t["boom"][0]["parent_task_id"] == t["block"][0]["task_id"]
    assert t["after"][0]["parent_task_id"] == t["block"][0]["task_id"]
