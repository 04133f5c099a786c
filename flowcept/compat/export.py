"""Flowcept's JSONL buffer file as an export of any store or archive.

``flowcept_messages(source)``: the workflow and task messages, in
Flowcept's document shape, of a run directory, a store directory or an
HDF5 archive; ``export_buffer_file(source, path)`` writes them one JSON
message per line, the file ``Flowcept.read_buffer_file(path)`` reads.
"""
from __future__ import annotations

import os
from typing import List, Optional

from flowcept.compat import buffer, documents
from flowcept.flowcept_api import db


def _is_archive(path: str) -> bool:
    return os.path.isfile(path) and path.endswith((".h5", ".hdf5"))


def flowcept_messages(source: str, workflow_id: Optional[str] = None) -> List[dict]:
    if _is_archive(source):
        from flowcept.archive.hdf5 import Archive
        a = Archive(source)
        try:
            rows = [(a.task(i), a.payload(i)) for i in range(a.n)]
            workflows = a.workflows_by_id()
        finally:
            a.close()
    else:
        rows, workflows = db._raw([source])
    workflows, _entities = documents.split_records(workflows)
    msgs = [m for wf, d in workflows.items() if d.get("save_workflow", True)
            for m in documents.workflow_messages(wf, d)]
    msgs.sort(key=lambda w: w.get("started_at") or 0)
    rows = sorted(rows, key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
    msgs.extend(documents.task_documents(rows, workflows))
    if workflow_id is not None:
        msgs = [m for m in msgs if m.get("workflow_id") == workflow_id]
    return msgs


def export_buffer_file(source: str, path: str, workflow_id: Optional[str] = None) -> str:
    buffer.delete(path)
    return buffer.write(flowcept_messages(source, workflow_id), path) or path


__all__ = ["flowcept_messages", "export_buffer_file"]
