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
    rows = sorted(rows, key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
    wfs, _entities = documents.split_records(workflows)
    ids = [documents.workflow_document(wf, d)["workflow_id"] for wf, d in
           sorted(wfs.items(), key=lambda kv: kv[1].get("started_at") or 0)]
    for t in documents.task_documents(rows, wfs):
        if t["workflow_id"] not in ids:
            ids.append(t["workflow_id"])
    if workflow_id is not None:
        ids = [i for i in ids if i == workflow_id]
    msgs: List[dict] = []
    for wf in ids:   # per workflow, as its buffer held them: start, tasks, end
        msgs.extend(documents.buffer_messages(wf, rows, workflows))
    return msgs


def export_buffer_file(source: str, path: str, workflow_id: Optional[str] = None) -> str:
    buffer.delete(path)
    return buffer.write(flowcept_messages(source, workflow_id), path) or path


__all__ = ["flowcept_messages", "export_buffer_file"]
