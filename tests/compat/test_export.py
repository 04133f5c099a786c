"""Flowcept's JSONL buffer file exported from a store and from an HDF5
archive: the same messages either way."""
import json
import uuid

import pytest

from flowcept import Flowcept, FlowceptTask, flowcept_task
from flowcept.compat.export import export_buffer_file, flowcept_messages


def run(run_dir):
    @flowcept_task(output_names="y")
    def f(x):
        return x + 1

    wid = str(uuid.uuid4())
    with Flowcept(workflow_id=wid, workflow_name="exp", campaign_id="c9"):
        f(1)
        FlowceptTask(activity_id="note", used={"k": "v"}, tags=["t"]).send()
    return wid


def test_store_export_reads_back_as_buffer_file(run_dir, tmp_path):
    wid = run(run_dir)
    path = export_buffer_file(run_dir, str(tmp_path / "buffer.jsonl"))
    msgs = Flowcept.read_buffer_file(path)
    assert [m["type"] for m in msgs] == ["workflow", "task", "task", "workflow"]
    assert all(m["workflow_id"] == wid for m in msgs)
    assert msgs[1]["generated"] == {"y": 2} and msgs[2]["tags"] == ["t"]
    assert [json.loads(x)["type"] for x in open(path)] == ["workflow", "task", "task", "workflow"]
    assert msgs[0]["status"] == "RUNNING" and msgs[-1]["status"] == "FINISHED"


def test_archive_export_equals_store_export(run_dir, tmp_path):
    pytest.importorskip("h5py", reason="archives are HDF5 (the hdf5 extra)")
    from flowcept.archive.compact import compact
    wid = run(run_dir)
    out = str(tmp_path / "job.h5")
    compact(run_dir, out, progress=False)
    from_archive = flowcept_messages(out, workflow_id=wid)
    from_store = flowcept_messages(run_dir, workflow_id=wid)
    key = lambda m: (m["type"], m.get("activity_id", ""))   # noqa: E731
    strip = lambda m: {k: v for k, v in m.items() if k != "job"}   # noqa: E731
    assert [strip(m) for m in sorted(from_archive, key=key)] == \
        [strip(m) for m in sorted(from_store, key=key)]
    assert len(from_archive) == 4
