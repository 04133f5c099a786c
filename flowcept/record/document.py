"""Task records as Flowcept-style task documents.

The one builder of task documents, for every place that hands tasks out
as documents: the read path (``flowcept.query.documents``, over blocks of
rows, with the derived columns computed by numpy) and the MongoDB store
(``flowcept.store.mongodb.task_documents``).  It takes plain Python values
in columns (lists), not record rows, so that a caller holding columns pays
no numpy scalar access per field.

The fields and their order (Flowcept 1.0.3's names, plus what flowcept
adds): task_id, workflow_id, parent_task_id, activity_id, status,
started_at, ended_at (seconds), start_ns, end_ns, rank, thread_id,
hostname; then from the payload used, generated, tags, custom_metadata,
error -- or ``payload`` (+ ``payload_error``) when it is not a msgpack map.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import msgpack

from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_NAMES
from flowcept.record.payload import MAX_DEPTH, decode_or_raw

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


def format_ids(workflow_id: Sequence[int], ids: Sequence[int], null_zero: bool = False) -> list:
    """"<workflow hex>-<id hex>" of each row (None where id is 0 and null_zero)."""
    out = []
    wf_hex = {}
    for w, t in zip(workflow_id, ids):
        if null_zero and not t:
            out.append(None)
            continue
        wh = wf_hex.get(w)
        if wh is None:
            wh = wf_hex[w] = f"{w:016x}"
        out.append(f"{wh}-{t:016x}")
    return out


def assemble(task_id: Sequence[str], workflow_id: Sequence[str], parent_task_id: Sequence,
             activity: Sequence[str], status: Sequence[str], started_at: Sequence[float],
             ended_at: Sequence[float], start_ns: Sequence[int], end_ns: Sequence[int],
             rank: Sequence[int], thread_id: Sequence[int], hostname: Sequence[str],
             payloads: Optional[Sequence[bytes]], flags: Sequence[int],
             stats: Optional[dict] = None, bodies: Optional[list] = None) -> List[dict]:
    """The documents of rows whose fields are given in their document form
    (``task_documents`` derives them from record values).  ``payloads`` is
    each row's own payload (any name prefix already stripped), decoded when
    its flags say msgpack; None leaves the payload fields out.  A payload
    that does not decode is kept as raw bytes (``payload``) with
    ``payload_error`` and counted in ``stats["payload_errors"]``; opaque
    payloads (C API) come back as bytes in ``payload``.  ``bodies``, a list,
    receives each row's whole decoded payload ({} when it has none or it
    does not decode).  Never raises on a payload."""
    out = [{"task_id": t, "workflow_id": w, "parent_task_id": p, "activity_id": a, "status": s,
            "started_at": sa, "ended_at": ea, "start_ns": t0, "end_ns": t1, "rank": r,
            "thread_id": th, "hostname": h}
           for t, w, p, a, s, sa, ea, t0, t1, r, th, h in zip(
               task_id, workflow_id, parent_task_id, activity, status, started_at, ended_at,
               start_ns, end_ns, rank, thread_id, hostname)]
    if payloads is None:
        return out
    for doc, (body, ok) in zip(out, decode_payloads(payloads, flags, stats, bodies)):
        if body is not NO_PAYLOAD:
            payload_fields(doc, body, ok)
    return out


NO_PAYLOAD = object()   # no payload at all


def payload_fields(doc: dict, body, ok: bool) -> dict:
    """Adds a decoded payload's fields to a document (the payload map's
    PAYLOAD_FIELDS; a payload that is not a map as ``payload``; one that does
    not decode as raw bytes with ``payload_error``)."""
    if not ok:
        doc["payload"] = body
        doc["payload_error"] = PAYLOAD_ERROR
    elif type(body) is dict:
        for k in PAYLOAD_FIELDS:
            if k in body:
                doc[k] = body[k]
    else:
        doc["payload"] = body
    return doc


def decode_payloads(payloads: Sequence[bytes], flags: Sequence[int], stats: Optional[dict] = None,
                    bodies: Optional[list] = None) -> list:
    """(value, ok) of each payload, decoded as its flags say (``NO_PAYLOAD`` for
    an empty one); see ``assemble``.  Never raises."""
    out = []
    errors = 0
    unpackb = msgpack.unpackb
    keep = bodies is not None
    for data, fl in zip(payloads, flags):
        if not data:
            if keep:
                bodies.append({})
            out.append((NO_PAYLOAD, True))
            continue
        body = None
        ok = True
        if fl & FLAG_PAYLOAD_MSGPACK and len(data) <= MAX_DEPTH:
            try:   # the common case; longer payloads take decode()'s depth check
                body = unpackb(data, raw=False, strict_map_key=False)
            except Exception:
                body = None
        if body is None:
            body, ok = decode_or_raw(data, fl)
        if keep:
            bodies.append(body if ok and not isinstance(body, bytes) else {})
        if not ok:
            errors += 1
        out.append((body, ok))
    if errors and stats is not None:
        stats["payload_errors"] = stats.get("payload_errors", 0) + errors
    return out


def task_documents(*, workflow_id: Sequence[int], task_id: Sequence[int],
                   parent_id: Sequence[int], status: Sequence[int], start_ns: Sequence[int],
                   end_ns: Sequence[int], rank: Sequence[int], thread_id: Sequence[int],
                   activity: Sequence[str], hostname: Sequence[str],
                   payloads: Optional[Sequence[bytes]], flags: Sequence[int],
                   stats: Optional[dict] = None, bodies: Optional[list] = None) -> List[dict]:
    """The documents of rows given as record values in columns (lists of
    Python values); see ``assemble``."""
    return assemble(format_ids(workflow_id, task_id), [f"{w:016x}" for w in workflow_id],
                    format_ids(workflow_id, parent_id, null_zero=True), activity,
                    [STATUS_NAMES.get(s) or str(s) for s in status],
                    [t / 1e9 for t in start_ns], [t / 1e9 for t in end_ns], start_ns, end_ns,
                    rank, thread_id, hostname, payloads, flags, stats, bodies)


def task_document(*, workflow_id: int, task_id: int, parent_id: int, status: int,
                  start_ns: int, end_ns: int, rank: int, thread_id: int, activity: str,
                  hostname: str, payload, flags: int, stats: Optional[dict] = None) -> dict:
    """The document of one task (``task_documents`` of one row)."""
    return task_documents(workflow_id=(workflow_id,), task_id=(task_id,), parent_id=(parent_id,),
                          status=(status,), start_ns=(start_ns,), end_ns=(end_ns,), rank=(rank,),
                          thread_id=(thread_id,), activity=(activity,), hostname=(hostname,),
                          payloads=(payload,), flags=(flags,), stats=stats)[0]
