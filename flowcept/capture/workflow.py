"""A workflow run: ``WorkflowRun``, with Flowcept 1.0.3's ``Flowcept(...)``
signature (``flowcept.Flowcept`` is it, with Flowcept's query and buffer
API on top: flowcept.compat.controller).

Starting a run starts (or joins) the process's capture session, records a
workflow start message (``status`` RUNNING, ``started_at``) and, when an
agent is named, an agent message, then starts the interceptors (adapters by
name through the registry, or objects with start()/stop()).  Stopping stops
the interceptors, records the end message (``ended_at``, ``status``
FINISHED) and, when this run started the session, ends it, which drains every
record into the store.  Flowcept's ids: a workflow id and a campaign id are
uuid4 strings unless given (any string works; ours is its 64-bit hash).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import socket
import time
import uuid
from typing import Any, Dict, List, Optional, Union

from flowcept.capture import session as runtime
from flowcept.config import load_config
from flowcept.record import job as jobs

log = logging.getLogger("flowcept")

_HEX_ID = re.compile(r"^[0-9a-f]{16}$")

# Keywords of Flowcept's constructor that drive its own services: accepted,
# kept on the run (docs/compatibility.md says what each means here).
_FLOWCEPT_SERVICE_KEYS = ("dask_client",)


def workflow_int_id(workflow_id: Union[int, str, None]) -> Optional[int]:
    """Our 64-bit workflow id of a Flowcept-style id.

    An int is used as it is; the 16-hex-digit string form we print is parsed
    back; any other string (a uuid4, a name) is hashed with BLAKE2b, so the
    same string always gives the same id."""
    if workflow_id is None or isinstance(workflow_id, int):
        return workflow_id
    text = str(workflow_id)
    if _HEX_ID.match(text):
        return int(text, 16) or 1
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def entity_int_id(kind: str, entity_id: str) -> int:
    """The id under which a described entity other than a workflow (an agent,
    a dashboard) is recorded: merged by id like a workflow, never equal to a
    workflow's."""
    return workflow_int_id(f"{kind}:{entity_id}")


class WorkflowRun:
    """Starts capture for a workflow, as Flowcept's ``Flowcept``::

        with Flowcept(workflow_name="heat", campaign_id="c1"):
            run()

    ``interceptors`` (first, as in Flowcept): adapter names of the registry
    group ``flowcept.adapters`` (``"dask"``, ``"mlflow"``, ...) or objects
    with start()/stop(); ``"instrumentation"`` (decorator capture) is always
    on.  Keyword arguments that are configuration keys (``run_dir``,
    ``transport``, ...) override the environment and settings file; other
    keywords go to the interceptors that take them (``dask_client``).
    ``Flowcept.current_workflow_id`` and ``Flowcept.campaign_id`` (class
    attributes) hold the ids of the last started workflow.
    """

    current_workflow_id: Optional[str] = None
    campaign_id: Optional[str] = None
    is_started_any = False

    def __init__(self, interceptors: Any = None, bundle_exec_id: Optional[str] = None,
                 campaign_id: Optional[str] = None, workflow_id: Union[int, str, None] = None,
                 workflow_name: Optional[str] = None, workflow_description: Optional[str] = None,
                 workflow_subtype: Optional[str] = None, workflow_args: Optional[dict] = None,
                 agent_id: Optional[str] = None, agent_name: Optional[str] = None,
                 parent_workflow_id: Optional[str] = None, start_persistence: bool = True,
                 check_safe_stops: bool = True, save_workflow: bool = True,
                 delete_buffer_file: Optional[bool] = None, *args: Any,
                 settings_path: Optional[str] = None, telemetry=None, **kwargs: Any):
        self.interceptors = interceptors
        self.args = args
        self.kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _FLOWCEPT_SERVICE_KEYS}
        self._overrides = kwargs   # configuration keys, checked at start()
        self.current_workflow_id = (workflow_id if isinstance(workflow_id, str) else
                                    (f"{workflow_id:016x}" if isinstance(workflow_id, int)
                                     else str(uuid.uuid4())))
        self.campaign_id = campaign_id if campaign_id is not None else str(uuid.uuid4())
        self.bundle_exec_id = (str(bundle_exec_id) if bundle_exec_id is not None else
                               f"{self.current_workflow_id}{os.getpid()}_{id(self)}")
        self.workflow_name = workflow_name
        self.workflow_description = workflow_description
        self.workflow_subtype = workflow_subtype
        self.workflow_args = workflow_args
        self.agent_id = agent_id
        self.agent_name = agent_name
        self.parent_workflow_id = parent_workflow_id
        self.start_persistence = start_persistence
        self.check_safe_stops = check_safe_stops
        self.save_workflow = save_workflow
        self.delete_buffer_file_at_start = delete_buffer_file
        self._workflow_id = workflow_int_id(workflow_id if workflow_id is not None
                                            else self.current_workflow_id)
        self._settings_path = settings_path
        self._telemetry_source = telemetry
        self._owns_session = False
        self._interceptor_instances: Optional[List] = None
        self.is_started = False
        self.enabled = True
        self.session: Optional[runtime.Session] = None
        self.config = None

    @property
    def workflow_id(self) -> Optional[int]:
        """Our 64-bit id of this workflow (``current_workflow_id`` is the string)."""
        return self._workflow_id

    def load_config(self):
        return load_config(self._settings_path, **self._session_overrides())

    def _session_overrides(self) -> Dict[str, Any]:
        return dict(self._overrides)

    def start(self) -> "WorkflowRun":
        if self.is_started:
            return self
        config = self.config = self.load_config()
        if not config.enabled:
            self.enabled = False
            return self
        interceptors = self._resolve_interceptors()   # a wrong name fails before anything starts
        existing = runtime.current()
        if existing is not None and not existing.closed:
            self.session = existing
            existing.workflow_id = self._workflow_id
        else:
            self.session = runtime.start_local_session(config, workflow_id=self._workflow_id)
            self._owns_session = True
        if self._telemetry_source is not None:
            self.session.telemetry = self._telemetry_source
        # the class attributes Flowcept code reads (Flowcept.current_workflow_id)
        WorkflowRun.current_workflow_id = self.current_workflow_id
        WorkflowRun.campaign_id = self.campaign_id
        self._started_ns = time.time_ns()
        doc = self._workflow_fields()
        doc.update(started_at=self._started_ns, status="RUNNING",
                   interceptor_ids=self._interceptor_names())
        if not self.save_workflow:
            doc["save_workflow"] = False   # Flowcept's buffer leaves its messages out
        self.session.push_workflow(doc)
        if self.agent_id is not None or self.agent_name is not None:
            self.agent_id = self.agent_id or str(uuid.uuid4())
            self.record_agent({"agent_id": self.agent_id, "name": self.agent_name,
                               "workflow_id": self.current_workflow_id,
                               "campaign_id": self.campaign_id, "registered_at": time.time()})
        self._interceptor_instances = []
        for item in interceptors:
            if isinstance(item, type):
                started = item.from_session(self.session, **self._adapter_kwargs(item))
                started.start(background=True)
            else:
                item.start()
                started = item
            self._interceptor_instances.append(started)
        self.is_started = True
        WorkflowRun.is_started_any = True
        return self

    def _workflow_fields(self) -> Dict[str, Any]:
        """The workflow document's fields, as Flowcept names them."""
        from flowcept import __version__
        doc = {"workflow_id": self.current_workflow_id, "campaign_id": self.campaign_id,
               "name": self.workflow_name, "workflow_description": self.workflow_description,
               "subtype": self.workflow_subtype, "used": self.workflow_args,
               "agent_id": self.agent_id, "parent_workflow_id": self.parent_workflow_id,
               "user": jobs.user_name(), "hostname": socket.gethostname(), "pid": os.getpid(),
               "job": self.session.job.job_name, "flowcept_version": __version__}
        return {k: v for k, v in doc.items() if v is not None}

    def record_agent(self, doc: Dict[str, Any]) -> None:
        """Records an agent description (merged by agent_id)."""
        body = {k: v for k, v in doc.items() if v is not None}
        body["type"] = "agent"
        self.session.push_workflow(body, workflow_id=entity_int_id("agent", str(doc["agent_id"])))

    def _adapter_kwargs(self, cls) -> Dict[str, Any]:
        """The Flowcept keywords (dask_client, ...) an adapter's constructor takes."""
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return {}
        return {k: v for k, v in self.kwargs.items() if k in params}

    def _interceptor_names(self) -> List[str]:
        """The workflow's interceptors by name, instrumentation first."""
        items = self.interceptors
        if items is None:
            items = []
        elif isinstance(items, str) or not isinstance(items, (list, tuple, set)):
            items = [items]
        names = ["instrumentation"]
        for item in items:
            name = item if isinstance(item, str) else getattr(item, "name", type(item).__name__)
            if name not in names:
                names.append(str(name))
        return names

    def _resolve_interceptors(self) -> list:
        """Flowcept's ``interceptors``: adapters by name (registry group
        ``flowcept.adapters``; their classes) or objects with start()/stop()."""
        from flowcept import registry
        from flowcept.errors import ConfigError
        items = self.interceptors
        if items is None:
            return []
        if isinstance(items, str) or not isinstance(items, (list, tuple, set)):
            items = [items]
        out = []
        for item in items:
            if item == "instrumentation":
                continue
            if isinstance(item, str):
                try:
                    item = registry.load("adapter", item)
                except LookupError as e:
                    raise ConfigError(f"Flowcept(interceptors=[{item!r}]): {e}") from None
            out.append(item)
        return out

    def stop(self) -> None:
        s = self.session
        was_started, self.is_started = self.is_started, False
        if not was_started or s is None or s.closed:
            return
        for adapter in reversed(self._interceptor_instances or ()):
            try:
                adapter.stop()
            except Exception as e:   # the run's own end must not fail on an observer
                log.error("flowcept: interceptor %r did not stop cleanly: %s", adapter, e)
        if s.drainer is not None:
            s.drainer.drain_once()   # room in the ring for the end record, even after drops
        s.push_workflow({"ended_at": time.time_ns(), "status": "FINISHED"},
                        workflow_id=self._workflow_id)
        if self._owns_session:
            runtime.end_session()
        else:
            flush_session(s)

    def __enter__(self) -> "WorkflowRun":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    @property
    def run_dir(self) -> Optional[str]:
        return self.session.job.run_dir if self.session else None


def flush_session(s) -> None:
    """Publishes and flushes everything the session's ring holds (a session
    this run did not start goes on; what it recorded is at the transport)."""
    drainer = getattr(s, "drainer", None)
    if drainer is None or s.closed:
        return
    try:
        drainer.drain_once(max_batches=1 << 30)
        drainer.drain_spills()
    except Exception as e:   # what stays in the ring is drained at the session's end
        log.warning("flowcept: could not flush the capture session now (%s); its records are "
                    "stored when it ends", e)
