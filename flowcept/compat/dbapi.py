"""``Flowcept.db``: Flowcept's ``DBAPI`` over the engine's stores.

Where the data is:
* the embedded transport (Flowcept's ``mq.enabled: false``): every store
  under the configured ``run_dir`` and the run directories this process's
  ``Flowcept`` objects used, the running session drained first;
* another transport (Redis, Kafka, Mofka): the configured database the
  keepers write, the LMDB store at ``databases.lmdb.path`` or MongoDB, read
  through the handle of this process's own keeper when one runs (after the
  session flushed and that keeper caught up, so a query sees what ended).

Writes (``insert_or_update_workflow/task/agent``, dashboards) are recorded
through the capture session like any record and then stored (by this
process's keeper, or one run for the purpose), so they are idempotent and
acknowledged after commit like everything else.  Filters are Mongo-style
(``flowcept.query.filters``).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from flowcept.compat import documents as D
from flowcept.flowcept_api import db as reading
from flowcept.query import filters as F

log = logging.getLogger("flowcept")

ASCENDING = 1
DESCENDING = -1
COLLECTIONS = ("tasks", "workflows", "agents", "objects", "dashboards")


def _config():
    from flowcept.config import ConfigError, process_config
    try:
        return process_config()
    except ConfigError:
        return None


def make_visible(config=None, consume: bool = True) -> None:
    """Makes what this process recorded readable: the session's ring is
    flushed and, when records travel through a transport, this process's
    keepers catch up; with ``consume`` and no keeper running here, one
    stores what the transport holds now (a write must be readable at once,
    as Flowcept's direct database writes are)."""
    from flowcept.capture import session as runtime
    from flowcept.capture.workflow import flush_session
    from flowcept.compat import persistence
    s = runtime.current()
    if s is not None and not s.closed:
        flush_session(s)
    config = config or _config()
    if config is None or config.transport == "embedded":
        return
    keepers = persistence.running()
    if keepers or not consume:
        for p in keepers:
            p.sync()
        return
    try:
        persistence.Persistence(config).start().stop()
    except Exception as e:   # the MQ or database is down: what is stored is read
        log.warning("flowcept: %s", e)


def _open_configured(config) -> Tuple[list, list]:
    """(stores to close, stores of running keepers) of the configured database."""
    from flowcept.compat import persistence
    from flowcept.errors import StoreError
    from flowcept.store import open_store, open_store_at
    own, shared = [], []
    for backend, location in persistence.store_specs(config):
        handle = persistence.open_store_of(location)
        if handle is not None:
            shared.append(handle)
            continue
        try:
            if backend == "mongodb":
                own.append(open_store(backend, location, config, readonly=True))
            elif os.path.isfile(os.path.join(location, "store.json")):
                own.append(open_store_at(location))
        except (StoreError, OSError) as e:
            log.warning("flowcept: cannot read %s at %s: %s", backend, location, e)
    return own, shared


def read_all(paths: Sequence[str] = (), cond: Optional[dict] = None) -> Tuple[list, Dict[int, dict]]:
    """(task rows in start order, merged described records) from where the
    data is; ``cond`` (the part of a filter the columns answer): only the
    tasks matching it, with their parents and children."""
    config = _config()
    if paths or config is None or config.transport == "embedded":
        rows, workflows = reading._raw(paths, cond)
        rows.sort(key=lambda r: (r[0]["start_ns"], r[0]["task_id"]))
        return rows, workflows
    make_visible(config, consume=False)
    own, shared = _open_configured(config)
    try:
        return reading.read_stores(own + shared, cond)
    finally:
        for st in own:
            st.close()


def record_described(kind: str, entity_id: str, doc: Dict[str, Any]) -> bool:
    """Records a described entity (workflow, agent, dashboard: merged by id
    in the store) through the capture session, and stores it."""
    from flowcept.capture import session as runtime
    from flowcept.capture.workflow import entity_int_id, workflow_int_id
    s = runtime.current() or runtime.ensure_session()
    if s is None:
        return False
    wf = workflow_int_id(entity_id) if kind == "workflow" else entity_int_id(kind, entity_id)
    s.push_workflow({k: v for k, v in doc.items() if v is not None}, workflow_id=wf)
    make_visible(s.config)
    return True


class DBAPI:
    """Flowcept's ``DBAPI`` (``Flowcept.db``).  ``paths``: read only the stores
    under these directories."""

    ASCENDING = ASCENDING
    DESCENDING = DESCENDING

    def __init__(self, paths: Sequence[str] = ()):
        self.paths = list(paths)

    # -- the data ------------------------------------------------------------
    def _collections(self, task_filter: Optional[dict] = None) -> Dict[str, List[dict]]:
        rows, merged = read_all(self.paths, reading._columns_part(task_filter))
        wfs, entities = D.split_records(merged)
        wdocs = [D.workflow_document(wf, d) for wf, d in wfs.items()]
        wdocs.sort(key=lambda w: w.get("started_at") or 0)
        return {"tasks": D.task_documents(rows, wfs), "workflows": wdocs,
                "agents": list(entities["agents"].values()), "objects": [],
                "dashboards": list(entities["dashboards"].values())}

    def _docs(self, collection: str, filter: Optional[dict] = None) -> List[dict]:
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}; use one of "
                             f"{', '.join(COLLECTIONS)}")
        # a task filter's column part is answered on the columns first
        return self._collections(filter if collection == "tasks" else None)[collection]

    # -- queries ---------------------------------------------------------------
    def query(self, filter: Optional[dict] = None, projection=None, limit: int = 0, sort=None,
              aggregation=None, remove_json_unserializables: bool = True,
              collection: str = "tasks") -> List[dict]:
        docs = [d for d in self._docs(collection, filter) if F.matches(d, filter or {})]
        if aggregation:
            docs = reading.aggregate(docs, aggregation, projection)
            projection = None
        docs = reading.sort_docs(docs, sort)
        if limit:
            docs = docs[:limit]
        docs = reading.project(docs, projection)
        if remove_json_unserializables:
            docs = [reading._jsonable(d) for d in docs]
        return docs

    def task_query(self, filter: Optional[dict] = None, projection=None, limit: int = 0,
                   sort=None, aggregation=None,
                   remove_json_unserializables: bool = True) -> List[dict]:
        return self.query(filter, projection, limit, sort, aggregation,
                          remove_json_unserializables, collection="tasks")

    def workflow_query(self, filter: Optional[dict] = None, projection=None, limit: int = 0,
                       sort=None, aggregation=None,
                       remove_json_unserializables: bool = True) -> List[dict]:
        return self.query(filter, projection, limit, sort, aggregation,
                          remove_json_unserializables, collection="workflows")

    def agent_query(self, filter: Optional[dict] = None, projection=None, limit: int = 0,
                    sort=None, remove_json_unserializables: bool = True) -> List[dict]:
        return self.query(filter, projection, limit, sort, None, remove_json_unserializables,
                          collection="agents")

    def get_workflow_object(self, workflow_id):
        from flowcept.compat.objects import WorkflowObject
        docs = self.workflow_query(filter={"workflow_id": workflow_id},
                                   remove_json_unserializables=False)
        return WorkflowObject.from_dict(docs[0]) if docs else None

    def get_agent_object(self, agent_id):
        from flowcept.compat.objects import AgentObject
        docs = self.agent_query(filter={"agent_id": agent_id}, remove_json_unserializables=False)
        return AgentObject.from_dict(docs[0]) if docs else None

    def get_tasks_from_current_workflow(self) -> List[dict]:
        from flowcept.capture.workflow import WorkflowRun
        return self.task_query(filter={"workflow_id": WorkflowRun.current_workflow_id})

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
            raise ImportError("Flowcept.db.to_df needs pandas: pip install pandas") from None
        return pd.json_normalize(self.query(filter=filter or {}, collection=collection), sep=".")

    def dump_to_file(self, collection: str = "tasks", filter: Optional[dict] = None,
                     output_file: Optional[str] = None, export_format: str = "json",
                     should_zip: bool = False) -> str:
        """Writes a collection (json: a list; jsonl: Flowcept's buffer file;
        csv/parquet through pandas); returns the path written."""
        from flowcept.compat import buffer
        if output_file is None:
            output_file = f"{collection}_{time.strftime('%Y%m%d_%H%M%S')}.{export_format}"
        docs = self.query(filter=filter or {}, collection=collection)
        if export_format == "json":
            with open(output_file, "w") as f:
                json.dump(docs, f, default=str)
        elif export_format == "jsonl":
            buffer.delete(output_file)
            buffer.write(docs, output_file)
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

    # -- writes ----------------------------------------------------------------
    def insert_or_update_workflow(self, workflow_obj):
        """Records a workflow document (merged with what is stored for its id)."""
        if getattr(workflow_obj, "workflow_id", None) is None:
            workflow_obj.workflow_id = str(uuid.uuid4())
        doc = {k: v for k, v in workflow_obj.to_dict().items() if k != "type"}
        doc["workflow_id"] = str(workflow_obj.workflow_id)
        return workflow_obj if record_described("workflow", doc["workflow_id"], doc) else None

    def insert_or_update_agent(self, agent_obj):
        """Records an agent document (merged with what is stored for its agent_id)."""
        if getattr(agent_obj, "agent_id", None) is None:
            agent_obj.agent_id = str(uuid.uuid4())
        doc = dict(agent_obj.to_dict())
        doc["type"] = "agent"
        return agent_obj if record_described("agent", str(agent_obj.agent_id), doc) else None

    def insert_or_update_task(self, task):
        """Records a task (a TaskObject or a dict) as a task."""
        from flowcept.capture.task import FlowceptTask
        doc = dict(task.to_dict() if hasattr(task, "to_dict") else task)
        doc.pop("type", None)
        for key in ("utc_timestamp", "registered_at"):
            doc.pop(key, None)
        status = doc.pop("status", None) or "FINISHED"
        ended_at = doc.pop("ended_at", None)
        t = FlowceptTask(**{k: v for k, v in doc.items() if v is not None})
        t.end(ended_at=ended_at, status=status)
        make_visible()
        return doc.get("task_id") or t.get_id()

    def save_workflow_domain_data_schema(self, workflow_id: str, snapshot: Dict) -> bool:
        return record_described("workflow", str(workflow_id),
                                {"workflow_id": str(workflow_id),
                                 "workflow_domain_data_schema": snapshot})

    def get_workflow_domain_data_schema(self, workflow_id: str) -> Optional[Dict]:
        wf = self.get_workflow_object(workflow_id)
        return getattr(wf, "workflow_domain_data_schema", None) if wf is not None else None

    # -- objects (blobs): MongoDB's GridFS in Flowcept, not kept here ------------
    def _insert_or_update_object(self, *args, **kwargs):
        raise NotImplementedError("blob objects are not stored by flowcept (Flowcept keeps them in "
                                  "MongoDB GridFS); keep the file beside the run and record its "
                                  "path in a task's used/generated")

    def blob_object_query(self, filter) -> List[dict]:
        return []

    def get_blob_object(self, object_id, version=None):
        return None

    # -- analytics -------------------------------------------------------------
    def task_summary(self, filter: Optional[Dict] = None) -> Dict:
        tasks = self.task_query(filter=filter or {})
        statuses: Dict[str, int] = {}
        acts: Dict[str, dict] = {}
        t0 = t1 = None
        for t in tasks:
            statuses[t.get("status")] = statuses.get(t.get("status"), 0) + 1
            a = acts.setdefault(t.get("activity_id"), {"count": 0, "total_s": 0.0})
            a["count"] += 1
            s, e = t.get("started_at"), t.get("ended_at")
            if isinstance(s, (int, float)) and isinstance(e, (int, float)):
                a["total_s"] += e - s
                t0 = s if t0 is None else min(t0, s)
                t1 = e if t1 is None else max(t1, e)
        for a in acts.values():
            a["mean_s"] = a["total_s"] / a["count"] if a["count"] else None
        return {"count": len(tasks), "status_counts": statuses, "activity_stats": acts,
                "time_range": {"min": t0, "max": t1}}

    def derive_campaigns(self, campaign_id: Optional[str] = None) -> List[Dict]:
        flt = {"campaign_id": campaign_id} if campaign_id else {}
        out: Dict[str, dict] = {}
        for w in self.workflow_query(filter=flt):
            c = out.setdefault(w.get("campaign_id"), {"campaign_id": w.get("campaign_id"),
                                                      "workflows": []})
            c["workflows"].append(w["workflow_id"])
        return list(out.values())

    def derive_agents(self, filter: Optional[Dict] = None) -> List[Dict]:
        return self.agent_query(filter=filter or {})

    def telemetry_timeseries(self, filter: Optional[Dict] = None, fields: Sequence[str] = (),
                             x_field: str = "started_at", limit: int = 0) -> List[Dict]:
        rows = []
        for t in self.task_query(filter=filter or {}, sort=[(x_field, ASCENDING)], limit=limit):
            row = {x_field: _get(t, x_field)}
            for f in fields:
                row[f] = _get(t, f)
            rows.append(row)
        return rows

    def resolve_chart_data(self, data: Dict, context: Optional[Dict] = None) -> Dict:
        """Rows of a chart: ``source`` (a collection), ``filter``, and either
        ``group_by`` with ``metrics`` ([{field, agg}], agg count/sum/avg/min/
        max) or the matching documents."""
        source = data.get("source", "tasks")
        docs = self.query(filter=data.get("filter") or {}, collection=source,
                          limit=int(data.get("limit") or 0))
        group_by = data.get("group_by")
        if not group_by:
            return {"rows": docs, "count": len(docs)}
        groups: Dict[Any, List[dict]] = {}
        for d in docs:
            groups.setdefault(json.dumps(_get(d, group_by), default=str), []).append(d)
        rows = []
        for key, members in groups.items():
            row = {group_by: json.loads(key)}
            for m in data.get("metrics") or [{"field": "", "agg": "count"}]:
                agg, field = (m.get("agg") or "count").lower(), m.get("field") or ""
                vals = [v for v in (_get(x, field) for x in members) if F.is_number(v)] if field else []
                name = f"{agg}_{field}" if field else agg
                if agg == "count":
                    row[name] = len(members)
                elif not vals:
                    row[name] = None
                else:
                    row[name] = {"sum": sum, "min": min, "max": max}.get(
                        agg, lambda v: sum(v) / len(v))(vals)
            rows.append(row)
        return {"rows": rows, "count": len(rows)}

    # -- Flowcept's service plumbing ----------------------------------------------
    @staticmethod
    def get_dao_instance():
        from flowcept.compat.daos import DocumentDBDAO
        return DocumentDBDAO.get_instance(create_indices=False)

    @classmethod
    def _dao(cls):
        return cls.get_dao_instance()

    def liveness_test(self) -> bool:
        return all(self.db_liveness_tests().values())

    @staticmethod
    def db_liveness_tests() -> Dict[str, bool]:
        """Per configured database, whether it answers."""
        config = _config()
        if config is None:
            return {}
        if config.transport == "embedded":
            return {"lmdb": True}
        own, shared = _open_configured(config)
        for st in own:
            st.close()
        name = "mongodb" if config.store == "mongodb" else config.store
        return {name: bool(own or shared) or config.store != "mongodb"}

    def close(self) -> None:
        pass


def _get(doc: dict, path: str):
    v = F.get_path(doc, path) if path else None
    return None if v is F.MISSING else v
