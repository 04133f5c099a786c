"""One read path under every way in.

* A ring whose name table is full (FLOWCEPT_RING_NAMES=16) carries the
  other names in front of the payloads: every way in (search.query,
  read_tasks, read_records, Access as serve/query/MCP use it, the MCP tool
  functions, `flowcept query`, the archive, Flowcept.db) returns the same 40
  named tasks, found by name.
* A batch stored in two store directories under the served path (a keeper
  killed after its commit and replaced by one writing elsewhere) is counted
  once by every way in.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

import flowcept.archive as fa
from flowcept.access.core import Access
from flowcept.access.tools import call_tool
from flowcept.compat.dbapi import DBAPI
from flowcept.query.search import query
from flowcept.query.tasks import find_stores, read_records, read_tasks

APP = r"""
from flowcept import Flowcept, flowcept_task

def make(i):
    @flowcept_task(activity_id=f"act{i:02d}")
    def f(x):
        return {"y": x * 2}
    return f

with Flowcept(workflow_name="names"):
    for i in range(40):
        make(i)(i)
"""

NAMES = [f"act{i:02d}" for i in range(40)]


def _env(run_dir, shm_dir, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.pop("SLURM_JOB_ID", None)
    env.update(FLOWCEPT_RUN_DIR=run_dir, FLOWCEPT_SHM_DIR=shm_dir, FLOWCEPT_JOB_ID="names",
               **extra)
    return env


@pytest.fixture
def full_name_table(tmp_path):
    run_dir, shm = str(tmp_path / "runs"), str(tmp_path / "shm")
    os.makedirs(shm, exist_ok=True)
    subprocess.run([sys.executable, "-c", APP], check=True, timeout=120, capture_output=True,
                   env=_env(run_dir, shm, FLOWCEPT_RING_NAMES="16"))
    r = read_records(run_dir)
    from flowcept.record.payload import ACTIVITY_OVERFLOW
    assert (r.records["activity_id"] == ACTIVITY_OVERFLOW).sum() >= 20   # the names overflowed
    h5 = str(tmp_path / "names.h5")
    fa.compact(run_dir, h5, progress=False)
    return run_dir, h5


def _names(docs):
    return sorted(d["activity_id"] for d in docs)


def test_every_way_in_names_all_40_tasks(full_name_table):
    run_dir, h5 = full_name_table
    want = read_tasks(run_dir)
    assert _names(want) == NAMES
    assert all(d["used"] == {"x": int(d["activity_id"][3:])} for d in want)
    assert not any("payload_error" in d for d in want)
    assert _names(query(run_dir)) == NAMES
    assert sorted(read_records(run_dir).activity.tolist()) == NAMES
    for spec in (run_dir, h5):
        acc = Access([spec])
        try:
            page = acc.tasks(limit=100, count=True)
            assert page["items"] == want and page["total"] == 40
            assert list(acc.iter_tasks()) == want
            one = acc.tasks(filter={"activity_id": "act37"})
            assert [d["used"] for d in one["items"]] == [{"x": 37}]
            assert {r["activity"] for r in acc.stats("activity")["items"]} == set(NAMES)
            tool = json.loads(call_tool(acc, "find_tasks", {"filter": {"activity_id": {"$in": NAMES[20:]}},
                                                            "limit": 100}))
            assert _names(tool["items"]) == NAMES[20:]
        finally:
            acc.close()
        r = subprocess.run([sys.executable, "-m", "flowcept.access.cli", "query", spec, "--all",
                            "--format", "jsonl"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert [json.loads(x) for x in r.stdout.splitlines()] == want
    with fa.open(h5) as a:
        assert _names(a.task(i) for i in range(len(a))) == NAMES
        assert sorted(a.to_pandas()["activity_id"]) == NAMES
    db = DBAPI([run_dir])
    assert _names(db.task_query({})) == NAMES
    assert [t["used"] for t in db.task_query({"activity_id": "act05"})] == [{"x": 5}]
    assert _names(DBAPI([h5]).task_query({})) == NAMES


def test_a_batch_in_two_store_directories_is_read_once(full_name_table, tmp_path):
    run_dir, _h5 = full_name_table
    (store,) = find_stores(run_dir)
    want = read_tasks(run_dir)
    # a second keeper wrote the same batches into another directory of the same job
    shutil.copytree(store, store.rstrip("/") + "-replaced")
    assert len(find_stores(run_dir)) == 2
    assert read_tasks(run_dir) == want
    assert len(read_records(run_dir)) == 40
    assert len(query(run_dir)) == 40
    acc = Access([run_dir])
    try:
        assert acc.tasks(limit=1000, count=True)["total"] == 40 and list(acc.iter_tasks()) == want
        assert sum(r["count"] for r in acc.stats("rank")["items"]) == 40
        assert acc.workflow_summary()["tasks"] == 40
    finally:
        acc.close()
    assert len(DBAPI([run_dir]).task_query({})) == 40
    h5 = str(tmp_path / "twice.h5")
    fa.compact(run_dir, h5, progress=False)
    with fa.open(h5) as a:
        assert len(a) == 40
