"""Flowcept's document shape over the read path's rows.

A task row is ``(doc, body)``: the read path's task document
(``flowcept.record.document``) and the decoded payload, which holds the
Flowcept fields capture recorded (``flowcept.capture.task``).  Workflow
records are merged per id by the store; agents and dashboards are recorded
the same way under ids of their own, with ``type`` in their document.
Nothing here runs while capturing.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Keys of a payload that are not Flowcept task fields as they stand.
_SPECIAL = ("error", "status", "task_id", "parent_task_id", "workflow_id", "type")

_BINDING_ERRORS = ("got multiple values for argument", "missing ", "unexpected keyword argument",
                   "positional argument", "takes ")

# Workflow-document keys of stores written before the Flowcept names were kept.
_LEGACY_WORKFLOW_KEYS = {"workflow_args": "used", "description": "workflow_description"}

# What a described entity's type is, by collection.
ENTITY_TYPES = {"agents": "agent", "dashboards": "dashboard"}


def binding_failure(doc: dict, body: Any) -> bool:
    """A call whose arguments did not fit the signature: Flowcept binds them
    before the call and records no task; we record the TypeError the call
    raised, and leave it out of Flowcept's documents."""
    err = body.get("error") if isinstance(body, dict) else None
    if doc.get("status") != "ERROR" or not isinstance(err, dict):
        return False
    msg = str(err.get("message", ""))
    # Python names the function by its qualified name (Outer.<locals>.f() ...)
    head = re.match(r"^(?:[\w<>]+\.)*" + re.escape(str(doc.get("activity_id"))) + r"\(\) ", msg)
    return (err.get("type") == "builtins.TypeError" and head is not None
            and any(p in msg for p in _BINDING_ERRORS))


def _seconds(value: Any) -> Any:
    """Our ns timestamps as Flowcept's seconds (floats pass through)."""
    return value / 1e9 if isinstance(value, int) and not isinstance(value, bool) else value


def workflow_string_ids(workflows: Dict[int, dict]) -> Dict[str, str]:
    """hex form -> the string id the caller gave (where one was given)."""
    return {f"{wf:016x}": doc["workflow_id"] for wf, doc in workflows.items()
            if isinstance(doc.get("workflow_id"), str)}


def entity_type(doc: dict) -> Optional[str]:
    t = doc.get("type")
    return t if t in ENTITY_TYPES.values() else None


def workflow_document(wf: int, doc: dict) -> dict:
    """A merged workflow record as Flowcept's workflow document."""
    out = {_LEGACY_WORKFLOW_KEYS.get(k, k): v for k, v in doc.items() if k != "save_workflow"}
    out["type"] = "workflow"
    if not isinstance(out.get("workflow_id"), str):
        out["workflow_id"] = f"{wf:016x}"
    for k in ("started_at", "ended_at"):
        if k in out:
            out[k] = _seconds(out[k])
    if "utc_timestamp" not in out and "started_at" in out:
        out["utc_timestamp"] = out["started_at"]
    return out


def workflow_messages(wf: int, doc: dict) -> List[dict]:
    """Flowcept's workflow messages of one merged record: the start message
    (``status`` RUNNING, no ``ended_at``) and, once the workflow ended, the
    end message (all fields, ``status`` FINISHED)."""
    full = workflow_document(wf, doc)
    start = {k: v for k, v in full.items() if k != "ended_at"}
    start["status"] = "RUNNING"
    return [start, full] if "ended_at" in full else [start]


def entity_document(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k not in ("deleted",)}
    for k in ("registered_at", "created_at", "updated_at"):
        if k in out:
            out[k] = _seconds(out[k])
    return out


def task_documents(rows: Sequence[Tuple[dict, Any]], workflows: Dict[int, dict]) -> List[dict]:
    """Task documents as Flowcept writes them, in the rows' order."""
    str_ids = workflow_string_ids(workflows)
    by_hex = {f"{wf:016x}": d for wf, d in workflows.items()}
    custom_ids: Dict[str, str] = {}
    out = []
    for doc, body in rows:
        if binding_failure(doc, body):
            continue
        d = dict(doc)
        d["type"] = "task"
        wf_hex = d["workflow_id"]
        wdoc = by_hex.get(wf_hex, {})
        if isinstance(body, dict):
            flowcept_made = "type" in body or "status" in body or "task_id" in body
            for k, v in body.items():
                if k not in _SPECIAL:
                    d[k] = v
            if isinstance(d.get("used"), dict) and not flowcept_made:
                used = d["used"] = dict(d["used"])
                # Flowcept takes these arguments of a decorated call as the task's fields
                for key in ("workflow_id", "campaign_id", "agent_id", "source_agent_id"):
                    if isinstance(used.get(key), str):
                        d[key] = used.pop(key)
            gen = d.get("generated")
            if isinstance(gen, dict) and len(gen) == 1 and "return" in gen:
                d["generated"] = {"arg_0": gen["return"]}   # Flowcept's positional name
            err = body.get("error")
            if err is not None:
                d["error"] = err
                d.setdefault("stderr", err.get("message") if isinstance(err, dict) else str(err))
            if isinstance(body.get("workflow_id"), str):
                d["workflow_id"] = body["workflow_id"]
            if isinstance(body.get("task_id"), str):
                custom_ids[d["task_id"]] = body["task_id"]
                d["task_id"] = body["task_id"]
            if isinstance(body.get("parent_task_id"), str):
                d["parent_task_id"] = body["parent_task_id"]
            if isinstance(body.get("status"), str):   # Flowcept statuses we have no code for
                d["status"] = body["status"]
        if d["workflow_id"] == wf_hex:
            d["workflow_id"] = str_ids.get(wf_hex, wf_hex)
        d.setdefault("campaign_id", wdoc.get("campaign_id"))
        if wdoc.get("job"):
            d["job"] = wdoc["job"]
        d["utc_timestamp"] = d["ended_at"]
        out.append(d)
    if custom_ids:
        for d in out:
            p = d.get("parent_task_id")
            if p in custom_ids:
                d["parent_task_id"] = custom_ids[p]
    for d in out:   # Flowcept leaves absent fields out
        for k in ("parent_task_id", "campaign_id"):
            if d.get(k) is None:
                d.pop(k, None)
    return out


def split_records(workflows: Dict[int, dict]) -> Tuple[Dict[int, dict], Dict[str, Dict[str, dict]]]:
    """(workflows, {collection: {id: document}}) of merged described records:
    agents and dashboards apart from workflows; a deleted entity is absent."""
    wfs: Dict[int, dict] = {}
    entities: Dict[str, Dict[str, dict]] = {c: {} for c in ENTITY_TYPES}
    for wf, doc in workflows.items():
        kind = entity_type(doc)
        if kind is None:
            wfs[wf] = doc
            continue
        collection = next(c for c, t in ENTITY_TYPES.items() if t == kind)
        key = doc.get(f"{kind}_id")
        if key is not None and not doc.get("deleted"):
            entities[collection][str(key)] = entity_document(doc)
    return wfs, entities


def buffer_messages(workflow_id: Optional[str], rows, workflows: Dict[int, dict]) -> List[dict]:
    """Flowcept's message buffer of one workflow: its agent messages, its
    workflow messages (unless it ran with save_workflow=False), then its tasks
    in the order they ended."""
    if workflow_id is None:
        return []
    wfs, entities = split_records(workflows)
    msgs = [a for a in entities["agents"].values() if a.get("workflow_id") == workflow_id]
    for wf, doc in wfs.items():
        if doc.get("save_workflow", True) and workflow_document(wf, doc)["workflow_id"] == workflow_id:
            start, *end = workflow_messages(wf, doc)
            msgs.append(start)
            tail = end
            break
    else:
        tail = []
    tasks = [t for t in task_documents(rows, wfs) if t["workflow_id"] == workflow_id]
    tasks.sort(key=lambda t: t.get("end_ns", 0))
    return msgs + tasks + tail
