"""Task records as Flowcept-style task documents.

The one builder of task documents, for every place that hands tasks out
as documents: the read path (``flowcept.query.documents``, over blocks of
rows) and the MongoDB store (``flowcept.store.mongodb.task_documents``).
It takes plain Python values in columns (lists), not record rows, so that a
caller holding columns pays no numpy scalar access per field.

The fields and their order (Flowcept 1.0.3's names, plus what flowcept
adds): task_id, workflow_id, parent_task_id, activity_id, status,
started_at, ended_at (seconds), start_ns, end_ns, rank, thread_id,
hostname; then from the payload used, generated, tags, custom_metadata,
error -- or ``payload`` (+ ``payload_error``) when it is not a msgpack map.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from flowcept.record.layout import STATUS_NAMES
from flowcept.record.payload import decode_or_raw

# The fixed fields of every task document, in order.
FIXED_FIELDS = ("task_id", "workflow_id", "parent_task_id", "activity_id", "status", "started_at",
                "ended_at", "start_ns", "end_ns", "rank", "thread_id", "hostname")
# The payload map's keys that become fields of the task document.
PAYLOAD_FIELDS = ("used", "generated", "tags", "custom_metadata", "error")
# Fields a document may have from its payload (the map's keys, or the raw payload).
PAYLOAD_ROOTS = PAYLOAD_FIELDS + ("payload", "payload_error")
PAYLOAD_ERROR = "payload flagged msgpack does not decode"


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code) or str(code)


def task_documents(*, workflow_id: Sequence[int], task_id: Sequence[int],
                   parent_id: Sequence[int], status: Sequence[int], start_ns: Sequence[int],
                   end_ns: Sequence[int], rank: Sequence[int], thread_id: Sequence[int],
                   activity: Sequence[str], hostname: Sequence[str],
                   payloads: Optional[Sequence[bytes]], flags: Sequence[int],
                   stats: Optional[dict] = None, bodies: Optional[list] = None) -> List[dict]:
    """The documents of rows given as columns (lists of Python values).
    ``payloads`` is each row's own payload (any name prefix already
    stripped), decoded when its flags say msgpack; None leaves the payload
    fields out.  A payload that does not decode is kept as raw bytes
    (``payload``) with ``payload_error`` and counted in
    ``stats["payload_errors"]``; opaque payloads (C API) come back as bytes
    in ``payload``.  ``bodies``, a list, receives each row's whole decoded
    payload ({} when it has none or it does not decode), for readers that
    want more of it than the document's fields.  Never raises on a payload."""
    wf_hex = {}
    out = []
    for w, t, p, s, t0, t1, r, th, a, h in zip(workflow_id, task_id, parent_id, status, start_ns,
                                               end_ns, rank, thread_id, activity, hostname):
        wh = wf_hex.get(w)
        if wh is None:
            wh = wf_hex[w] = f"{w:016x}"
        out.append({
            "task_id": f"{wh}-{t:016x}",
            "workflow_id": wh,
            "parent_task_id": f"{wh}-{p:016x}" if p else None,
            "activity_id": a,
            "status": STATUS_NAMES.get(s) or str(s),
            "started_at": t0 / 1e9,
            "ended_at": t1 / 1e9,
            "start_ns": t0,
            "end_ns": t1,
            "rank": r,
            "thread_id": th,
            "hostname": h,
        })
    if payloads is not None:
        errors = 0
        for doc, data, fl in zip(out, payloads, flags):
            if not data:
                if bodies is not None:
                    bodies.append({})
                continue
            body, ok = decode_or_raw(data, fl)
            if bodies is not None:
                bodies.append(body if ok and not isinstance(body, bytes) else {})
            if not ok:
                doc["payload"] = body
                doc["payload_error"] = PAYLOAD_ERROR
                errors += 1
            elif isinstance(body, dict):
                for k in PAYLOAD_FIELDS:
                    if k in body:
                        doc[k] = body[k]
            else:
                doc["payload"] = body
        if errors and stats is not None:
            stats["payload_errors"] = stats.get("payload_errors", 0) + errors
    return out


def task_document(*, workflow_id: int, task_id: int, parent_id: int, status: int,
                  start_ns: int, end_ns: int, rank: int, thread_id: int, activity: str,
                  hostname: str, payload, flags: int, stats: Optional[dict] = None) -> dict:
    """The document of one task (``task_documents`` of one row)."""
    return task_documents(workflow_id=(workflow_id,), task_id=(task_id,), parent_id=(parent_id,),
                          status=(status,), start_ns=(start_ns,), end_ns=(end_ns,), rank=(rank,),
                          thread_id=(thread_id,), activity=(activity,), hostname=(hostname,),
                          payloads=(payload,), flags=(flags,), stats=stats)[0]
