"""Flowcept's data access objects (``flowcept.commons.daos``).

``DocumentDBDAO.get_instance()`` is the DAO of the configured database:
``MongoDBDAO`` when ``databases.mongodb.enabled``, else ``LMDBDAO`` (the
store is always on here, so there is always one).  Both read and write
through ``Flowcept.db``'s paths (flowcept.compat.dbapi); ``MongoDBDAO`` also
has Flowcept's direct operations on its ``tasks`` collection (bulk
upserts by a key, counts, deletions), with plain ``$set`` updates, which
every MongoDB server takes.  ``MQDao.build()`` is the configured transport:
its liveness, and Flowcept's messages sent as records.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from flowcept.compat import dbapi

log = logging.getLogger("flowcept")


class DocumentDBDAO:
    """The configured database's DAO; ``get_instance()`` (a singleton) picks it."""

    _instance: Optional["DocumentDBDAO"] = None

    def __new__(cls, *args, **kwargs):
        if cls is DocumentDBDAO:
            raise TypeError("DocumentDBDAO is abstract: use DocumentDBDAO.get_instance()")
        return super().__new__(cls)

    def __init__(self, create_indices: bool = False):
        self._db = dbapi.DBAPI()

    @staticmethod
    def get_instance(*args, **kwargs) -> "DocumentDBDAO":
        if DocumentDBDAO._instance is None:
            from flowcept.compat import settings
            cls = MongoDBDAO if settings.load().constants()["MONGO_ENABLED"] else LMDBDAO
            DocumentDBDAO._instance = cls(*args, **kwargs)
        return DocumentDBDAO._instance

    def close(self) -> None:
        if DocumentDBDAO._instance is self:
            DocumentDBDAO._instance = None

    def liveness_test(self) -> bool:
        return self._db.liveness_test()

    # -- documents -----------------------------------------------------------
    def insert_or_update_workflow(self, wf_obj) -> bool:
        return self._db.insert_or_update_workflow(wf_obj) is not None

    def insert_or_update_agent(self, agent_obj) -> bool:
        return self._db.insert_or_update_agent(agent_obj) is not None

    def insert_one_task(self, task_dict: Dict) -> Any:
        return self._db.insert_or_update_task(task_dict)

    def save_workflow_domain_data_schema(self, workflow_id: str, fields: Dict) -> bool:
        return self._db.save_workflow_domain_data_schema(workflow_id, fields)

    def query(self, filter=None, projection=None, limit=0, sort=None, aggregation=None,
              remove_json_unserializables=True, collection="tasks"):
        return self._db.query(filter, projection, limit, sort, aggregation,
                              remove_json_unserializables, collection)

    def task_query(self, filter=None, projection=None, limit=0, sort=None, aggregation=None,
                   remove_json_unserializables=True):
        return self._db.task_query(filter, projection, limit, sort, aggregation,
                                   remove_json_unserializables)

    def workflow_query(self, filter=None, projection=None, limit=0, sort=None,
                       remove_json_unserializables=True):
        return self._db.workflow_query(filter, projection, limit, sort, None,
                                       remove_json_unserializables)

    def agent_query(self, filter=None, projection=None, limit=0, sort=None,
                    remove_json_unserializables=True):
        return self._db.agent_query(filter, projection, limit, sort, remove_json_unserializables)

    def object_query(self, filter) -> List[dict]:
        return []

    def count_tasks(self) -> int:
        return len(self._db.task_query({}))

    def count_workflows(self) -> int:
        return len(self._db.workflow_query({}))

    def to_df(self, collection="tasks", filter=None):
        return self._db.to_df(collection, filter)

    def dump_to_file(self, collection_name="tasks", filter=None, output_file=None,
                     export_format="json", should_zip=False):
        return self._db.dump_to_file(collection_name, filter, output_file, export_format,
                                     should_zip)

    def get_tasks_recursive(self, workflow_id, max_depth=999, mapping=None):
        return self._db.get_tasks_recursive(workflow_id, max_depth, mapping)

    # -- dashboards (Flowcept's web UI state) -----------------------------------
    def save_dashboard(self, doc: Dict) -> bool:
        key = doc.get("dashboard_id")
        if key is None:
            raise ValueError("a dashboard needs a dashboard_id")
        return dbapi.record_described("dashboard", str(key),
                                      {**doc, "type": "dashboard", "deleted": False})

    def get_dashboard(self, dashboard_id: str) -> Optional[Dict]:
        docs = self._db.query({"dashboard_id": dashboard_id}, collection="dashboards")
        return docs[0] if docs else None

    def list_dashboards(self, filter: Optional[Dict] = None) -> List[Dict]:
        return self._db.query(filter or {}, collection="dashboards")

    def delete_dashboard(self, dashboard_id: str) -> bool:
        if self.get_dashboard(dashboard_id) is None:
            return False
        return dbapi.record_described("dashboard", str(dashboard_id),
                                      {"dashboard_id": dashboard_id, "type": "dashboard",
                                       "deleted": True})

    # -- analytics -----------------------------------------------------------------
    def task_summary(self, filter: Dict) -> Dict:
        return self._db.task_summary(filter)

    def derive_campaigns(self, campaign_id: Optional[str] = None) -> List[Dict]:
        return self._db.derive_campaigns(campaign_id)

    def derive_agents(self, filter: Optional[Dict] = None) -> List[Dict]:
        return self._db.derive_agents(filter)

    def telemetry_timeseries(self, filter=None, fields=(), x_field="started_at", limit=0):
        return self._db.telemetry_timeseries(filter, fields, x_field, limit)

    def resolve_chart_data(self, data: Dict, context: Optional[Dict] = None) -> Dict:
        return self._db.resolve_chart_data(data, context)


class LMDBDAO(DocumentDBDAO):
    """The DAO over the LMDB store (``databases.lmdb``)."""


class MongoDBDAO(DocumentDBDAO):
    """The DAO over MongoDB (``databases.mongodb``): ``Flowcept.db``'s paths,
    plus Flowcept's direct operations on the ``tasks`` collection."""

    def __init__(self, create_indices: bool = False):
        super().__init__(create_indices)
        self._client = None

    def _tasks(self):
        from flowcept.compat import settings
        try:
            import pymongo
        except ImportError:
            raise RuntimeError("MongoDBDAO needs pymongo: pip install pymongo") from None
        c = settings.load().constants()
        if self._client is None:
            self._client = pymongo.MongoClient(settings.mongo_url(c),
                                               serverSelectionTimeoutMS=5000)
        return self._client[str(c["MONGO_DB"])]["tasks"]

    def insert_and_update_many_tasks(self, docs: List[Dict], indexing_key: str = None) -> bool:
        """Upserts task documents by ``indexing_key`` (default task_id)."""
        import pymongo
        key = indexing_key or "task_id"
        ops = [pymongo.UpdateOne({key: d[key], "task_id": d.get("task_id")},
                                 {"$set": dict(d)}, upsert=True)
               for d in docs if key in d]
        if ops:
            self._tasks().bulk_write(ops, ordered=False)
        return True

    def count_tasks(self) -> int:
        return int(self._tasks().count_documents({}))

    def delete_task_keys(self, key_name: str, keys_list: List) -> bool:
        self._tasks().delete_many({key_name: {"$in": list(keys_list)}})
        return True

    def delete_tasks_with_filter(self, filter: Dict) -> bool:
        self._tasks().delete_many(filter)
        return True

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            c.close()
        super().close()


class MQDao:
    """Flowcept's MQ DAO over the configured transport."""

    def __init__(self, adapter_settings=None):
        from flowcept.compat.logger import FlowceptLogger
        self.logger = FlowceptLogger()
        self.started = False
        self.buffer: Optional[list] = None
        self._keyvalue_dao = None

    @staticmethod
    def build(*args, **kwargs) -> "MQDao":
        return MQDao(*args, **kwargs)

    def liveness_test(self) -> bool:
        """Whether the configured transport accepts a connection."""
        from flowcept.config import ConfigError, process_config
        from flowcept.errors import TransportUnavailable
        from flowcept.record import job as jobs
        from flowcept.transport import open_transport
        try:
            config = process_config()
        except ConfigError as e:
            self.logger.error("flowcept: %s", e)
            return False
        if config.transport == "embedded":
            return True
        try:
            open_transport(config.transport, config, jobs.job_info(config, "liveness")).close()
            return True
        except (TransportUnavailable, OSError) as e:
            self.logger.error("flowcept: MQ not ready: %s", e)
            return False

    def send_message(self, message: Dict, *args, **kwargs) -> None:
        """Records a Flowcept message: a task as a task, a workflow or agent
        document as a described record."""
        kind = message.get("type", "task")
        if kind == "task":
            from flowcept.capture.task import FlowceptTask
            fields = {k: v for k, v in message.items() if k != "type"}
            status = fields.pop("status", None) or "FINISHED"
            ended_at = fields.pop("ended_at", None)
            FlowceptTask(**fields).end(ended_at=ended_at, status=status)
        elif kind in ("workflow", "agent"):
            key = message.get(f"{kind}_id")
            if key is not None:
                dbapi.record_described(kind, str(key), dict(message))

    def bulk_publish(self, buffer: List[Dict]) -> None:
        for m in buffer:
            self.send_message(m)

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


__all__ = ["DocumentDBDAO", "LMDBDAO", "MongoDBDAO", "MQDao"]
