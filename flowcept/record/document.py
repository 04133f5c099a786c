"""A task record as a Flowcept-style task document.

One builder for every place that hands tasks out as documents: the
readers (``flowcept.query.tasks.task_dict``, over a record row) and the
MongoDB store (``flowcept.store.mongodb.task_documents``, over whole
columns).  It takes plain Python values, not a record row, so that a
caller holding columns pays no numpy scalar access per field.
"""
from __future__ import annotations

from typing import Optional

from flowcept.record.layout import STATUS_NAMES, format_task_id
from flowcept.record.payload import decode_or_raw

# The payload map's keys that become fields of the task document.
PAYLOAD_FIELDS = ("used", "generated", "tags", "custom_metadata", "error")
PAYLOAD_ERROR = "payload flagged msgpack does not decode"


def task_document(*, workflow_id: int, task_id: int, parent_id: int, status: int,
                  start_ns: int, end_ns: int, rank: int, thread_id: int, activity: str,
                  hostname: str, payload, flags: int, stats: Optional[dict] = None) -> dict:
    """The document of one task.  ``payload`` is the record's own payload
    (any name prefix already stripped), decoded when ``flags`` say msgpack;
    one that does not decode is kept as raw bytes (``payload``) with
    ``payload_error`` and counted in ``stats["payload_errors"]``.  Opaque
    payloads (C API) come back as bytes in ``payload``.  Never raises on the
    payload."""
    doc = {
        "task_id": format_task_id(workflow_id, task_id),
        "workflow_id": f"{workflow_id:016x}",
        "parent_task_id": format_task_id(workflow_id, parent_id) if parent_id else None,
        "activity_id": activity,
        "status": STATUS_NAMES.get(status) or str(status),
        "started_at": start_ns / 1e9,
        "ended_at": end_ns / 1e9,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "rank": rank,
        "thread_id": thread_id,
        "hostname": hostname,
    }
    body, ok = decode_or_raw(payload, flags) if payload else ({}, True)
    if not ok:
        doc["payload"] = body
        doc["payload_error"] = PAYLOAD_ERROR
        if stats is not None:
            stats["payload_errors"] = stats.get("payload_errors", 0) + 1
    elif isinstance(body, dict):
        for k in PAYLOAD_FIELDS:
            if k in body:
                doc[k] = body[k]
    else:
        doc["payload"] = body
    return doc
