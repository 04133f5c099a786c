"""``Flowcept.db``: Flowcept's query API over our stores.

Documents are built at read time in Flowcept's shape (``type``, string
``task_id``/``workflow_id``, ``campaign_id`` on every task, ``status`` with
Flowcept's values, ``stderr`` for errors, ``utc_timestamp``), with what we
add (``rank``, ``hostname``, ``job``).  Nothing of this runs while capturing.

What is read: every store under the configured ``run_dir`` (and under any
run directory a ``Flowcept`` of this process used), plus the store of the
process's own running session, drained first so that a query inside a
``with Flowcept():`` block sees the tasks that already ended.
Filters are Mongo-style (flowcept.query.filters).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from flowcept.query import filters as F

ASCENDING = 1
DESCENDING = -1

# run directories used by Flowcept objects of this process (queries read them too)
known_run_dirs: List[str] = []


# -- reading ---------------------------------------------------------------
def _live_frames() -> Tuple[Optional[str], List[bytes], Dict[int, dict]]:
    """(store path, frames, workflows) of this process's open session, drained
    first; (None, [], {}) when there is none or its store is not local."""
    from flowcept.capture import session as runtime
    s = runtime.current()
    drainer = getattr(s, "drainer", None) if s is not None and not s.closed else None
    if drainer is None:
        return None, [], {}
    try:
        drainer.drain_once(max_batches=1 << 30)
        drainer.drain_spills()
    except Exception:   # what is still in the ring is read after the run
        pass
    store = getattr(getattr(drainer, "transport", None), "store", None)
    if store is None:
        # the store is written by another process (the leader process, a
        # keeper): what was drained is read from disk like any other run
        root = os.path.dirname(os.path.abspath(s.job.run_dir))
        if root not in known_run_dirs:
            known_run_dirs.append(root)
        return None, [], {}
    # the drainer's lock: no write transaction is open while we read
    with drainer._lock:
        frames = [bytes(f) for _k, f in store.scan()]
        wfs = store.workflows()
    return os.path.abspath(getattr(store, "path", "")), frames, wfs


def _store_paths(extra_paths: Sequence[str] = ()) -> List[str]:
    """Store directories (and archives, when named) to read."""
    from flowcept.config import ConfigError, process_config
    from flowcept.query.tasks import find_stores
    roots = list(extra_paths)
    if not roots:
        try:
            roots.append(process_config().run_dir)
        except ConfigError:
            pass
        roots.extend(known_run_dirs)
    out, seen = [], set()
    for root in roots:
        if not root or not os.path.exists(root):
            continue
        if os.path.isfile(root) and _is_archive(root):
            found = [root]
        else:
            try:
                found = find_stores(root)
            except FileNotFoundError:
                continue
        for p in found:
            ap = os.path.abspath(p)
            if ap not in seen:
                seen.add(ap)
                out.append(ap)
    return out


def _is_archive(path: str) -> bool:
    from flowcept.access.sources import is_archive
    return is_archive(path)


class _FramesStore:
    """Frames in memory (the live session's) as a read-only store for the read path."""

    def __init__(self, frames):
        from flowcept.query.frames import frame_key
        self.frames = {frame_key(f): f for f in frames}

    def summaries(self):
        from flowcept.native.batch import Batch
        from flowcept.store.summary import summarize_columns
        for key, f in self.frames.items():
            yield key, summarize_columns(Batch(f, check=False))

    def scan(self, keys=None, zero_copy=False):
        for key in (self.frames if keys is None else keys):
            f = self.frames.get(bytes(key))
            if f is not None:
                yield bytes(key), f

    def close(self):
        pass


def _raw(paths: Sequence[str] = ()):
    """(task rows, workflows by int id): task rows are (doc, body) in start
    order (then task id), read through the one read path
    (flowcept.query.engine): doc is the reader's document and body the
    decoded payload (for the Flowcept fields the reader leaves out).  A batch
    in several stores is read once."""
    from flowcept.query.documents import DEFAULT_SORT
    from flowcept.query.engine import StoreTable, stream
    from flowcept.store import open_store_at
    live_path, live_frames, live_wfs = _live_frames() if not paths else (None, [], {})
    workflows: Dict[int, dict] = {}
    rows: List[Tuple[dict, Any]] = []
    stores = []
    try:
        for sp in _store_paths(paths):
            if live_path and (sp == live_path or sp.startswith(live_path + os.sep)
                              or live_path.startswith(sp + os.sep)):
                continue   # the open store is read through its own handle
            if os.path.isfile(sp):
                rows.extend(_archive_rows(sp, workflows))
                continue
            st = open_store_at(sp)
            stores.append(st)
            for wf, doc in st.workflows().items():
                workflows.setdefault(wf, {}).update(doc)
        if live_frames:
            stores.append(_FramesStore(live_frames))
        table = StoreTable(stores)
        for part in stream(table, None, DEFAULT_SORT, bodies=True):
            rows.extend(part)
    finally:
        for st in stores:
            st.close()
    for wf, doc in live_wfs.items():
        workflows.setdefault(wf, {}).update(doc)
    if any(os.path.isfile(p) for p in paths):
        rows.sort(key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
    return rows, workflows


def _archive_rows(path: str, workflows: Dict[int, dict]):
    import flowcept.archive
    from flowcept.query.documents import DEFAULT_SORT
    from flowcept.query.engine import stream
    with flowcept.archive.open(path) as a:
        for wf, doc in a.workflows_by_id().items():
            workflows.setdefault(wf, {}).update(doc)
        out = []
        for part in stream(a.table(), None, DEFAULT_SORT, bodies=True):
            out.extend(part)
    return out


# -- Flowcept's document shape ----------------------------------------------
_BODY_KEYS = ("used", "generated", "tags", "custom_metadata", "subtype", "agent_id",
              "source_agent_id", "agent_name", "source_agent_name", "data", "stdout", "stderr",
              "telemetry_at_start", "telemetry_at_end", "campaign_id", "group_id")


_BINDING_ERRORS = ("got multiple values for argument", "missing ", "unexpected keyword argument",
                   "positional argument", "takes ")


def _binding_failure(doc: dict, body: Any) -> bool:
    """A call whose arguments did not fit the signature: Flowcept binds them
    before the call and records no task; we record it as ERROR."""
    err = body.get("error") if isinstance(body, dict) else None
    if doc.get("status") != "ERROR" or not isinstance(err, dict):
        return False
    msg = str(err.get("message", ""))
    import re
    # Python names the function by its qualified name (Outer.<locals>.f() ...)
    head = re.match(r"^(?:[\w<>]+\.)*" + re.escape(str(doc.get("activity_id"))) + r"\(\) ", msg)
    return (err.get("type") == "builtins.TypeError" and head is not None
            and any(p in msg for p in _BINDING_ERRORS))


def _namespaces(value: Any, depth: int = 0) -> Any:
    """argparse.Namespace arguments as their fields, as Flowcept's default
    args handler gives them (our payload keeps the Namespace's repr)."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        if value.get("__type__") == "argparse.Namespace" and isinstance(value.get("repr"), str):
            parsed = _namespace_fields(value["repr"])
            if parsed is not None:
                return parsed
        return {k: _namespaces(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_namespaces(v, depth + 1) for v in value]
    return value


def _namespace_fields(text: str) -> Optional[dict]:
    import ast
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and not call.args):
            return None
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None


def workflow_string_ids(workflows: Dict[int, dict]) -> Dict[str, str]:
    """hex form -> the string id the caller gave (where one was given)."""
    return {f"{wf:016x}": doc["workflow_id"] for wf, doc in workflows.items()
            if isinstance(doc.get("workflow_id"), str)}


def flowcept_workflow_doc(wf: int, doc: dict) -> dict:
    from flowcept import __version__
    out = {k: v for k, v in doc.items() if k not in ("workflow_args", "started_at", "ended_at",
                                                       "save_workflow")}
    out["type"] = "workflow"
    out["workflow_id"] = doc.get("workflow_id") if isinstance(doc.get("workflow_id"), str) \
        else f"{wf:016x}"
    if doc.get("workflow_args") is not None:
        out["used"] = doc["workflow_args"]
    for k in ("started_at", "ended_at"):
        if isinstance(doc.get(k), int):
            out[k] = doc[k] / 1e9
    if "started_at" in out:
        out["utc_timestamp"] = out["started_at"]
    out.setdefault("flowcept_version", __version__)
    return out


def flowcept_task_docs(rows: List[Tuple[dict, Any]], workflows: Dict[int, dict]) -> List[dict]:
    """Task documents as Flowcept writes them, in start order."""
    str_ids = workflow_string_ids(workflows)
    by_hex = {f"{wf:016x}": d for wf, d in workflows.items()}
    custom_ids: Dict[str, str] = {}
    out = []
    for doc, body in sorted(rows, key=lambda r: r[0]["start_ns"]):
        if _binding_failure(doc, body):
            continue
        d = dict(doc)
        d["type"] = "task"
        wf_hex = d["workflow_id"]
        wdoc = by_hex.get(wf_hex, {})
        if isinstance(body, dict):
            for k in _BODY_KEYS:
                if k in body:
                    d[k] = body[k]
            if isinstance(d.get("used"), dict):
                d["used"] = used = _namespaces(d["used"])
                # Flowcept takes these two arguments of a decorated call as the task's ids
                for key in ("workflow_id", "campaign_id"):
                    if isinstance(used.get(key), str) and body.get("type") is None:
                        d[key] = used.pop(key)
            gen = d.get("generated")
            if (body.get("type") is None and isinstance(gen, dict) and len(gen) == 1
                    and "return" in gen):
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
        elif body:
            d["payload"] = body
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
    _loop_shape(out)
    for d in out:   # Flowcept leaves absent fields out
        for k in ("parent_task_id", "campaign_id"):
            if d.get(k) is None:
                d.pop(k, None)
    return out


def _loop_shape(docs: List[dict]) -> None:
    """Our FlowceptLoop's records in Flowcept's loop shape: the iteration
    index as ``i``, subtypes ``iteration`` and ``whole_loop``."""
    by_id = {d["task_id"]: d for d in docs}
    for d in docs:
        act, used = d.get("activity_id") or "", d.get("used")
        if not (act.endswith("_iteration") and isinstance(used, dict) and "index" in used):
            continue
        parent = by_id.get(d.get("parent_task_id"))
        if parent is None or parent.get("activity_id") != act[:-len("_iteration")]:
            continue
        d["used"] = {"i": used["index"], **{k: v for k, v in used.items() if k != "index"}}
        d.setdefault("subtype", "iteration")
        parent.setdefault("subtype", "whole_loop")


def read_flowcept_docs(paths: Sequence[str] = ()) -> Tuple[List[dict], List[dict]]:
    """(tasks, workflows) in Flowcept's shape from the stores under paths
    (default: the configured run_dir, the run dirs used, the live session)."""
    rows, workflows = _raw(paths)
    tasks = flowcept_task_docs(rows, workflows)
    wdocs = [flowcept_workflow_doc(wf, d) for wf, d in workflows.items()]
    wdocs.sort(key=lambda w: w.get("started_at") or 0)
    return tasks, wdocs


def buffer_messages(workflow_id: Optional[str], paths: Sequence[str] = ()) -> List[dict]:
    """Flowcept's message buffer of one workflow: its workflow message (unless
    it was started with save_workflow=False), then its tasks in start order."""
    if workflow_id is None:
        return []
    rows, workflows = _raw(paths)
    msgs = [w for w in (flowcept_workflow_doc(wf, d) for wf, d in workflows.items()
                        if d.get("save_workflow", True))
            if w["workflow_id"] == workflow_id]
    msgs.extend(t for t in flowcept_task_docs(rows, workflows) if t["workflow_id"] == workflow_id)
    return msgs


# -- query operations -------------------------------------------------------
def project(docs: List[dict], projection) -> List[dict]:
    """Mongo-style projection: a list of fields, or {field: 1|0}
    (flowcept.query.documents.project, document by document)."""
    if not projection:
        return docs
    from flowcept.query.documents import project as project_one
    return [project_one(d, projection) for d in docs]


def sort_docs(docs: List[dict], sort) -> List[dict]:
    """sort: [(field, ASCENDING|DESCENDING), ...] (or one field name), in the
    one order every way in sorts by (flowcept.query.documents.sort_docs)."""
    if not sort:
        return docs
    from flowcept.query.documents import sort_docs as sort_in_place
    return sort_in_place(list(docs), sort)


_AGG = ("avg", "sum", "min", "max", "count")


def aggregate(docs: List[dict], aggregation, projection=None) -> List[dict]:
    """aggregation: [(op, field), ...] with op in avg/sum/min/max/count.
    Grouped by the projection's fields when given (else one group); each
    result has ``_id`` (the group's field values) and ``<op>_<field>`` with
    dots as underscores."""
    fields = list(projection or [])
    groups: Dict[str, Tuple[dict, List[dict]]] = {}
    for d in docs:
        key = {f: (None if (v := F.get_path(d, f)) is F.MISSING else v) for f in fields}
        k = json.dumps(key, sort_keys=True, default=str)
        groups.setdefault(k, (key, []))[1].append(d)
    out = []
    for key, members in groups.values():
        row: Dict[str, Any] = {"_id": key or None}
        row.update(key)
        for op, field in aggregation:
            op = op.lower().lstrip("$")
            if op not in _AGG:
                raise ValueError(f"unknown aggregation {op!r}; use one of {', '.join(_AGG)}")
            vals = [v for m in members if F.is_number(v := F.get_path(m, field))]
            name = f"{op}_{field.replace('.', '_')}"
            if op == "count":
                row[name] = sum(1 for m in members if F.get_path(m, field) is not F.MISSING)
            elif not vals:
                row[name] = None
            elif op == "avg":
                row[name] = sum(vals) / len(vals)
            elif op == "sum":
                row[name] = sum(vals)
            elif op == "min":
                row[name] = min(vals)
            else:
                row[name] = max(vals)
        out.append(row)
    return out


def _jsonable(doc):
    """remove_json_unserializables: bytes and other values JSON cannot hold
    become their string forms."""
    return json.loads(json.dumps(doc, default=lambda o: o.decode("latin-1")
                                 if isinstance(o, (bytes, bytearray)) else str(o)))


class DBAPI:
    """Flowcept's ``DBAPI`` (``Flowcept.db``) over our stores.

    ``paths``: read only the stores under these directories (default: the
    configured run_dir, the run directories Flowcept objects used, and the
    running session's store)."""

    ASCENDING = ASCENDING
    DESCENDING = DESCENDING

    def __init__(self, paths: Sequence[str] = ()):
        self.paths = list(paths)

    def _docs(self, collection: str) -> List[dict]:
        tasks, wdocs = read_flowcept_docs(self.paths)
        if collection == "tasks":
            return tasks
        if collection == "workflows":
            return wdocs
        if collection in ("objects", "agents"):
            return []   # no blob objects or agents are recorded here
        raise ValueError(f"unknown collection {collection!r}; use 'tasks' or 'workflows'")

    def query(self, filter: Optional[dict] = None, projection=None, limit: int = 0, sort=None,
              aggregation=None, remove_json_unserializables: bool = True,
              collection: str = "tasks") -> List[dict]:
        docs = [d for d in self._docs(collection) if F.matches(d, filter or {})]
        if aggregation:
            docs = aggregate(docs, aggregation, projection)
            projection = None
        docs = sort_docs(docs, sort)
        if limit:
            docs = docs[:limit]
        docs = project(docs, projection)
        if remove_json_unserializables:
            docs = [_jsonable(d) for d in docs]
        return docs

    def task_query(self, filter: Optional[dict] = None, projection=None, limit: int = 0, sort=None,
                   aggregation=None, remove_json_unserializables: bool = True) -> List[dict]:
        return self.query(filter, projection, limit, sort, aggregation,
                          remove_json_unserializables, collection="tasks")

    def workflow_query(self, filter: Optional[dict] = None, projection=None, limit: int = 0,
                       sort=None, aggregation=None,
                       remove_json_unserializables: bool = True) -> List[dict]:
        return self.query(filter, projection, limit, sort, aggregation,
                          remove_json_unserializables, collection="workflows")

    def get_workflow_object(self, workflow_id):
        from flowcept.commons.flowcept_dataclasses.workflow_object import WorkflowObject
        docs = self.workflow_query(filter={"workflow_id": workflow_id})
        return WorkflowObject.from_dict(docs[0]) if docs else None

    def get_tasks_from_current_workflow(self) -> List[dict]:
        from flowcept.capture.workflow import Flowcept
        return self.task_query(filter={"workflow_id": Flowcept.current_workflow_id})

    def get_tasks_recursive(self, workflow_id, max_depth: int = 999, mapping=None) -> List[dict]:
        """The workflow's root tasks and, recursively by parent_task_id, their
        descendants (up to max_depth levels), in any workflow."""
        tasks = self.task_query(filter={})
        children: Dict[str, List[dict]] = {}
        for t in tasks:
            if t.get("parent_task_id"):
                children.setdefault(t["parent_task_id"], []).append(t)
        level = [t for t in tasks if t["workflow_id"] == workflow_id and not t.get("parent_task_id")]
        out, seen, depth = [], set(), 0
        while level and depth <= max_depth:
            nxt = []
            for t in level:
                if t["task_id"] in seen:
                    continue
                seen.add(t["task_id"])
                out.append(t)
                nxt.extend(children.get(t["task_id"], ()))
            level, depth = nxt, depth + 1
        return out

    def to_df(self, collection: str = "tasks", filter: Optional[dict] = None):
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Flowcept.db.to_df needs pandas: pip install flowcept[pandas]") from None
        return pd.json_normalize(self.query(filter=filter or {}, collection=collection), sep=".")

    def dump_to_file(self, collection: str = "tasks", filter: Optional[dict] = None,
                     output_file: Optional[str] = None, export_format: str = "json",
                     should_zip: bool = False) -> str:
        """Writes a collection (json: a list; jsonl: Flowcept's buffer file;
        csv/parquet through pandas); returns the path written."""
        import time
        if output_file is None:
            output_file = f"{collection}_{time.strftime('%Y%m%d_%H%M%S')}.{export_format}"
        docs = self.query(filter=filter or {}, collection=collection)
        if export_format == "json":
            with open(output_file, "w") as f:
                json.dump(docs, f, default=str)
        elif export_format == "jsonl":
            write_jsonl(docs, output_file)
        elif export_format in ("csv", "parquet"):
            df = self.to_df(collection, filter)
            df.to_csv(output_file, index=False) if export_format == "csv" else df.to_parquet(output_file)
        else:
            raise ValueError(f"export_format {export_format!r}: use json, jsonl, csv or parquet")
        if should_zip:
            import zipfile
            zpath = output_file + ".zip"
            with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(output_file, arcname=os.path.basename(output_file))
            os.remove(output_file)
            return zpath
        return output_file

    def insert_or_update_workflow(self, workflow_obj):
        """Records a workflow document (merged with what is stored for its id)."""
        import uuid
        from flowcept.capture import session as runtime
        from flowcept.capture.workflow import workflow_int_id
        if getattr(workflow_obj, "workflow_id", None) is None:
            workflow_obj.workflow_id = str(uuid.uuid4())
        s = runtime._session or runtime.ensure_session()
        if s is None:
            return None
        doc = {k: v for k, v in workflow_obj.to_dict().items() if k != "type" and v is not None}
        if "used" in doc:
            doc["workflow_args"] = doc.pop("used")
        doc["workflow_id"] = str(workflow_obj.workflow_id)
        s.push_workflow(doc, workflow_id=workflow_int_id(doc["workflow_id"]))
        return workflow_obj

    def insert_or_update_task(self, task):
        """Records a task document (a TaskObject or a dict) as a task."""
        from flowcept.instrumentation.task_capture import FlowceptTask
        doc = dict(task.to_dict() if hasattr(task, "to_dict") else task)
        doc.pop("type", None)
        known = ("task_id", "workflow_id", "campaign_id", "activity_id", "agent_id",
                 "parent_task_id", "used", "data", "subtype", "custom_metadata", "tags",
                 "generated", "stdout", "stderr", "status")
        kw = {k: doc.pop(k) for k in known if doc.get(k) is not None}
        kw.setdefault("status", "FINISHED")
        kw.update({k: v for k, v in doc.items() if v is not None and k not in
                   ("started_at", "ended_at", "hostname", "utc_timestamp")})
        FlowceptTask(**kw)
        return kw.get("task_id")

    def liveness_test(self) -> bool:
        return True   # the embedded store needs no server

    def close(self) -> None:
        pass


def write_jsonl(messages: Iterable[dict], path: str) -> str:
    """Flowcept's buffer file: one JSON message per line."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        for m in messages:
            f.write(json.dumps(m, default=_json_default))
            f.write("\n")
    return path


def _json_default(o):
    if isinstance(o, (bytes, bytearray)):
        return o.decode("latin-1")
    return str(o)


def read_jsonl(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
