"""``Flowcept``: the engine's workflow run (flowcept.capture.workflow) with
Flowcept 1.0.3's API around it.

* settings: the configuration comes from Flowcept's settings
  (flowcept.compat.settings); with a transport other than the embedded one
  the leader keeps a local copy of what this process records (the buffer);
* ``start_persistence`` (default True, as in Flowcept): with an MQ and a
  database in the settings, this process's keeper stores what is published
  (flowcept.compat.persistence), stopped and flushed at ``stop()``;
* ``Flowcept.buffer`` / ``get_buffer()``: the running workflow's messages
  as Flowcept buffers them (agent, workflow start, tasks in the order they
  ended), read back from the local store; None when no Flowcept runs;
* the buffer file: written at ``stop()`` when ``project.dump_buffer.enabled``
  (flowcept.compat.buffer), read by ``read_buffer_file``;
* ``Flowcept.db``: flowcept.compat.dbapi.DBAPI.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

from flowcept.capture.workflow import WorkflowRun, flush_session
from flowcept.compat import buffer as buffer_file
from flowcept.compat import documents as D
from flowcept.compat import settings as flowcept_settings
from flowcept.compat.utils import ClassProperty

log = logging.getLogger("flowcept")


def _constants() -> Dict[str, Any]:
    return flowcept_settings.load().constants()


class Flowcept(WorkflowRun):
    __doc__ = WorkflowRun.__doc__

    _db = None
    _current_instance: Optional["Flowcept"] = None
    _consumption: List = []   # keepers of start_consumption_services()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._persistence = None
        self._local_store: Optional[str] = None
        delete = self.delete_buffer_file_at_start
        if delete is None:
            delete = _constants()["DELETE_BUFFER_FILE"]
        if delete:
            Flowcept.delete_buffer_file()

    # -- Flowcept's class-level API --------------------------------------------
    @ClassProperty
    def db(cls):
        """Flowcept's DBAPI (flowcept.compat.dbapi.DBAPI)."""
        if Flowcept._db is None:
            from flowcept.compat.dbapi import DBAPI
            Flowcept._db = DBAPI()
        return Flowcept._db

    @ClassProperty
    def buffer(cls) -> Optional[List[dict]]:
        """The running workflow's messages (None when no Flowcept runs)."""
        current = Flowcept._current_instance
        return None if current is None else current._buffer_messages()

    @staticmethod
    def get_current_instance() -> Optional["Flowcept"]:
        return Flowcept._current_instance

    # -- start and stop ----------------------------------------------------------
    def start(self) -> "Flowcept":
        if self.is_started:
            return self
        if self._telemetry_source is None:
            self._telemetry_source = _telemetry_source()
        super().start()
        if not self.is_started:
            return self
        config = self.config
        job = self.session.job
        self._local_store = (config.store_dir if config.transport == "embedded" and config.store_dir
                             else os.path.join(job.run_dir, "store"))
        from flowcept.flowcept_api import db as reading
        root = os.path.dirname(os.path.abspath(job.run_dir))
        if root not in reading.known_run_dirs:
            reading.known_run_dirs.append(root)
        c = _constants()
        if (self.start_persistence and config.transport != "embedded"
                and (c["LMDB_ENABLED"] or c["MONGO_ENABLED"])):
            from flowcept.compat.persistence import Persistence
            try:
                self._persistence = Persistence(config).start()
            except BaseException:
                super().stop()
                raise
        Flowcept._current_instance = self
        return self

    def stop(self) -> None:
        if not self.is_started:
            log.warning("flowcept: Flowcept is already stopped or was never started")
            return
        try:
            super().stop()
        finally:
            for p in [self._persistence] + Flowcept._consumption:
                if p is not None:
                    p.stop()
            self._persistence = None
            Flowcept._consumption = []
            if Flowcept._current_instance is self:
                Flowcept._current_instance = None
            from flowcept.compat.daos import DocumentDBDAO
            if DocumentDBDAO._instance is not None:
                DocumentDBDAO._instance.close()
            Flowcept._db = None
        c = _constants()
        if c["DUMP_BUFFER_ENABLED"] and c["DUMP_BUFFER_PATH"]:
            self._dump(self._buffer_messages(final=True), None)

    # -- the buffer ---------------------------------------------------------------
    def _buffer_messages(self, final: bool = False) -> List[dict]:
        """The workflow's messages, read back from this process's local store."""
        from flowcept.flowcept_api import db as reading
        s = self.session
        if s is None or self._local_store is None:
            return []
        if not final and not s.closed:
            flush_session(s)
            live_path, frames, wfs = reading._live_frames()
            if live_path:
                rows, _ = reading.read_stores([reading.frames_store(frames)])
                return D.buffer_messages(self.current_workflow_id, rows, wfs)
        if not os.path.isdir(self._local_store):
            return []
        rows, wfs = reading._raw([self._local_store])
        return D.buffer_messages(self.current_workflow_id, rows, wfs)

    def get_buffer(self, return_df: bool = False):
        msgs = self._buffer_messages() if self.is_started else []
        return _df(msgs, True) if return_df else msgs

    def dump_buffer(self, path: Optional[str] = None) -> Optional[str]:
        """Appends the workflow's messages to Flowcept's JSONL buffer file."""
        return self._dump(self._buffer_messages(), path)

    def _dump(self, msgs: List[dict], path: Optional[str]) -> Optional[str]:
        c = _constants()
        target = buffer_file.resolve_path(path or c["DUMP_BUFFER_PATH"], self.current_workflow_id,
                                          c["APPEND_WORKFLOW_ID_TO_PATH"], c["APPEND_ID_TO_PATH"])
        return buffer_file.write(msgs, target)

    @staticmethod
    def read_buffer_file(file_path: Optional[str] = None, return_df: bool = False,
                         normalize_df: bool = False, consolidate: bool = False,
                         workflow_id: Optional[str] = None, cleanup_files: bool = True):
        """Flowcept's buffer file (default: project.dump_buffer.path).  With
        ``consolidate`` the workflow's files are merged first.  When the file
        is named after workflows and processes (``append_*_to_path``) and no
        path is given, the files of ``workflow_id`` (default: the current
        one) are read; without any buffer file, the workflow's messages come
        from the store."""
        c = _constants()
        path = file_path or c["DUMP_BUFFER_PATH"]
        wf = workflow_id or WorkflowRun.current_workflow_id
        if consolidate:
            if workflow_id is None:
                raise ValueError("read_buffer_file(consolidate=True) needs the workflow_id")
            msgs = buffer_file.read(buffer_file.consolidate(path, workflow_id, cleanup_files))
        elif os.path.exists(path):
            msgs = buffer_file.read(path)
        elif file_path is None and wf and (c["APPEND_WORKFLOW_ID_TO_PATH"] or c["APPEND_ID_TO_PATH"]):
            msgs = buffer_file.read_workflow(path, wf)
        elif file_path is None and not c["DUMP_BUFFER_ENABLED"] and wf:
            from flowcept.compat.dbapi import read_all
            rows, merged = read_all()
            msgs = D.buffer_messages(wf, rows, merged)
        else:
            msgs = buffer_file.read(path)
        return _df(msgs, normalize_df) if return_df else msgs

    read_messages_file = read_buffer_file

    @staticmethod
    def delete_buffer_file(path: Optional[str] = None) -> None:
        buffer_file.delete(path or _constants()["DUMP_BUFFER_PATH"])

    # -- agents ------------------------------------------------------------------------
    def save_agent(self, name: Optional[str] = None, agent_id: Optional[str] = None,
                   workflow_id: Optional[str] = None, campaign_id: Optional[str] = None) -> str:
        """Records an agent of this workflow; returns its id."""
        import time
        import uuid
        if self.session is None:
            raise RuntimeError("Flowcept.save_agent: start Flowcept first")
        agent_id = agent_id or str(uuid.uuid4())
        self.record_agent({"agent_id": agent_id, "name": name,
                           "workflow_id": workflow_id or self.current_workflow_id,
                           "campaign_id": campaign_id or self.campaign_id,
                           "registered_at": time.time()})
        return agent_id

    # -- services ----------------------------------------------------------------------
    @staticmethod
    def services_status() -> Dict[str, str]:
        """{service: "ok" | "unavailable"} of the MQ and databases the
        settings enable."""
        from flowcept.compat.daos import MQDao
        from flowcept.compat.dbapi import DBAPI
        c = _constants()
        out: Dict[str, str] = {}
        if c["MQ_ENABLED"]:
            out["mq"] = "ok" if MQDao.build().liveness_test() else "unavailable"
        if c["MONGO_ENABLED"] or c["LMDB_ENABLED"]:
            for name, up in DBAPI.db_liveness_tests().items():
                out[name] = "ok" if up else "unavailable"
        return out

    @staticmethod
    def services_alive() -> bool:
        return all(v == "ok" for v in Flowcept.services_status().values())

    @staticmethod
    def start_consumption_services(bundle_exec_id: Optional[str] = None,
                                   check_safe_stops: bool = False, consumers=None):
        """Starts this process's keeper of the configured MQ into the
        configured database (and ``consumers``: BaseConsumer objects or
        classes); it runs until the next ``Flowcept.stop()`` or the end of
        the process (it does not block, unlike Flowcept's)."""
        from flowcept.compat.persistence import Persistence
        from flowcept.config import process_config
        config = process_config()
        if config.transport == "embedded":
            log.warning("flowcept: no MQ is configured (mq.enabled is false): records are "
                        "stored as they are drained; nothing to consume")
            return None
        p = Persistence(config, consumers=consumers or ()).start()
        Flowcept._consumption.append(p)
        return p

    @staticmethod
    def generate_report(report_type: str = "workflow_card", format: str = "markdown",
                        print_markdown: bool = False, output_path: Optional[str] = None,
                        input_jsonl_path: Optional[str] = None,
                        records: Optional[List[dict]] = None, workflow_id: Optional[str] = None,
                        campaign_id: Optional[str] = None) -> Dict[str, Any]:
        """A workflow card (Markdown, or PDF with ``format="pdf"``) of the
        records given, of a buffer file, of a workflow or campaign in the
        database, or of the current workflow's buffer."""
        from flowcept.compat.report import generate_report
        return generate_report(report_type=report_type, format=format,
                               print_markdown=print_markdown, output_path=output_path,
                               input_jsonl_path=input_jsonl_path, records=records,
                               workflow_id=workflow_id, campaign_id=campaign_id)

    # -- blob objects: Flowcept keeps them in MongoDB's GridFS ------------------------
    @staticmethod
    def insert_or_update_object(*args, **kwargs):
        raise NotImplementedError("blob objects are not stored by flowcept (Flowcept keeps them in "
                                  "MongoDB GridFS); keep the file beside the run and record its "
                                  "path in a task's used/generated")

    insert_or_update_ml_model = insert_or_update_object
    insert_or_update_dataset = insert_or_update_object
    insert_or_update_torch_model = insert_or_update_object


def _no_telemetry_parts() -> dict:
    return {}


def _telemetry_source():
    """What a task records as telemetry when it captures telemetry: the parts
    of ``telemetry_parts`` (Flowcept's ``telemetry_capture`` parts; none:
    empty snapshots, as Flowcept writes).  Built at the first snapshot."""
    from flowcept.config import ConfigError, process_config
    try:
        parts = [p.strip() for p in process_config().telemetry_parts.split(",") if p.strip()]
    except ConfigError:
        return None
    if not parts:
        return _no_telemetry_parts
    made: list = []

    def snapshot() -> dict:
        if not made:
            from flowcept.adapters.telemetry import Telemetry
            made.append(Telemetry(what=parts))
        return made[0].capture()

    return snapshot


def _df(msgs, normalize: bool = True):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("return_df=True needs pandas: pip install pandas") from None
    return pd.json_normalize(msgs, sep=".") if normalize else pd.DataFrame(msgs)


class InstrumentationInterceptor:
    """Flowcept's instrumentation interceptor: a singleton whose messages are
    recorded like any capture (``get_instance()``; not to be constructed)."""

    _instance = None

    def __new__(cls, *args, **kwargs):
        raise TypeError("use InstrumentationInterceptor.get_instance()")

    @classmethod
    def get_instance(cls) -> "InstrumentationInterceptor":
        if cls._instance is None:
            from flowcept.compat.daos import MQDao
            obj = object.__new__(cls)
            obj.kind = "instrumentation"
            obj.started = True
            obj._mq_dao = MQDao.build()
            cls._instance = obj
        return cls._instance

    def start(self, bundle_exec_id=None, check_safe_stops: bool = True):
        return self

    def stop(self, check_safe_stops: bool = True) -> None:
        pass

    def intercept(self, obj_msg: Dict) -> None:
        self._mq_dao.send_message(obj_msg)

    def intercept_many(self, obj_messages: List[Dict]) -> None:
        self._mq_dao.bulk_publish(obj_messages)


__all__ = ["Flowcept", "InstrumentationInterceptor", "flowcept"]


def flowcept(func=None, **flowcept_kwargs: Any):
    """Flowcept's ``@flowcept`` / ``@flowcept(...)``: the function runs as one
    workflow (``Flowcept(**flowcept_kwargs)``; by default, as in Flowcept,
    without persistence and without workflow messages in the buffer)."""
    import functools
    import inspect
    opts = dict(flowcept_kwargs)
    opts.setdefault("start_persistence", False)
    opts.setdefault("save_workflow", False)
    opts.setdefault("check_safe_stops", False)

    def decorate(f):
        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def async_run(*args, **kwargs):
                with Flowcept(**opts):
                    return await f(*args, **kwargs)
            return async_run

        @functools.wraps(f)
        def run(*args, **kwargs):
            with Flowcept(**opts):
                return f(*args, **kwargs)
        return run

    return decorate(func) if func is not None else decorate
