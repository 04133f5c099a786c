"""``Flowcept``: a workflow run, as a context manager or start()/stop()."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
import uuid
from typing import Any, Optional, Union

from flowcept.capture import session as runtime
from flowcept.config import load_config
from flowcept.record import job as jobs

log = logging.getLogger("flowcept")

_HEX_ID = re.compile(r"^[0-9a-f]{16}$")

# Flowcept's interceptor kinds: a first positional argument that is one of
# these (or a list) is Flowcept's ``interceptors``, not our workflow name.
_INTERCEPTOR_KINDS = ("instrumentation", "dask", "mlflow", "tensorboard", "zambeze", "broker")

# Flowcept 1.0.3 keywords that drive its own services and mean nothing here
# (recorded on the object, documented in docs/compatibility.md).
_ACCEPTED_ONLY = ("bundle_exec_id", "start_persistence", "check_safe_stops", "dask_client")


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


class Flowcept:
    """Starts capture for a workflow::

        with Flowcept(workflow_name="heat", campaign_id="c1"):
            run()

    Keyword arguments that are configuration keys (``run_dir``,
    ``transport``, ...) override the environment and settings file.  When this
    object started the process's session it also ends it at stop(), which
    drains every record into the store.

    Every Flowcept 1.0.3 keyword is accepted: ``workflow_id`` may be any
    string (a uuid4 included) and is kept as given in the workflow document;
    ``interceptors`` may come first, as in Flowcept.  ``bundle_exec_id``,
    ``start_persistence``, ``check_safe_stops`` and ``dask_client`` mean
    nothing here (our store is always on, there are no consumer services to
    start or stop) and are only recorded on the object.

    ``Flowcept.current_workflow_id`` and ``Flowcept.campaign_id`` (class
    attributes, as in Flowcept) hold the ids of the last started workflow.
    """

    current_workflow_id: Optional[str] = None
    campaign_id: Optional[str] = None

    def __init__(self, workflow_name: Optional[Any] = None, *args: Any,
                 campaign_id: Optional[str] = None, workflow_id: Union[int, str, None] = None,
                 workflow_args: Optional[dict] = None, settings_path: Optional[str] = None,
                 interceptors: Any = None, workflow_description: Optional[str] = None,
                 workflow_subtype: Optional[str] = None, agent_id: Optional[str] = None,
                 parent_workflow_id: Optional[str] = None, save_workflow: bool = True,
                 delete_buffer_file: bool = True, **config_overrides: Any):
        if isinstance(workflow_name, (list, tuple)) or workflow_name in _INTERCEPTOR_KINDS:
            # Flowcept's signature: Flowcept(interceptors, bundle_exec_id, campaign_id, ...)
            interceptors, workflow_name = workflow_name, None
            for key, value in zip(("bundle_exec_id", "campaign_id", "workflow_id",
                                   "workflow_name", "workflow_args"), args):
                if key == "campaign_id" and campaign_id is None:
                    campaign_id = value
                elif key == "workflow_id" and workflow_id is None:
                    workflow_id = value
                elif key == "workflow_name":
                    workflow_name = value
                elif key == "workflow_args" and workflow_args is None:
                    workflow_args = value
                elif key == "bundle_exec_id":
                    config_overrides.setdefault("bundle_exec_id", value)
        elif args:
            raise TypeError("Flowcept() takes the workflow name (or Flowcept's interceptors) "
                            "as its only positional argument; pass the rest by keyword")
        self.flowcept_options = {k: config_overrides.pop(k) for k in _ACCEPTED_ONLY
                                 if k in config_overrides}
        self.interceptors = interceptors
        self.workflow_name = workflow_name or "workflow"
        self.campaign_id = campaign_id if campaign_id is not None else str(uuid.uuid4())
        self.workflow_args = workflow_args
        self.workflow_description = workflow_description
        self.workflow_subtype = workflow_subtype
        self.agent_id = agent_id
        self.parent_workflow_id = parent_workflow_id
        self.save_workflow = save_workflow
        self.delete_buffer_file_at_start = delete_buffer_file
        self._given_workflow_id = workflow_id
        self._workflow_id = workflow_int_id(workflow_id)
        self._settings_path = settings_path
        self._overrides = config_overrides
        self._owns_session = False
        self.is_started = False
        self.session: Optional[runtime.Session] = None

    @property
    def workflow_id(self) -> Optional[int]:
        """Our 64-bit id of this workflow (``current_workflow_id`` is its string form)."""
        return self.session.workflow_id if self.session else self._workflow_id

    def _string_id(self) -> Optional[str]:
        if isinstance(self._given_workflow_id, str):
            return self._given_workflow_id
        wf = self.workflow_id
        return None if wf is None else f"{wf:016x}"

    def start(self) -> "Flowcept":
        config = load_config(self._settings_path, **self._overrides)
        if not config.enabled:
            return self
        interceptors = self._resolve_interceptors()   # a wrong name fails before anything starts
        existing = runtime.current()
        if existing is not None and not existing.closed:
            self.session = existing
            if self._workflow_id:
                existing.workflow_id = self._workflow_id
        else:
            self.session = runtime.start_local_session(config, workflow_id=self._workflow_id)
            self._owns_session = True
        self._previous_workflow = None
        # the class attributes Flowcept code reads (Flowcept.current_workflow_id)
        Flowcept.current_workflow_id = self._string_id()
        Flowcept.campaign_id = self.campaign_id
        doc = {"name": self.workflow_name, "campaign_id": self.campaign_id,
               "user": jobs.user_name(), "hostname": socket.gethostname(), "pid": os.getpid(),
               "job": self.session.job.job_name, "started_at": time.time_ns(),
               "workflow_args": self.workflow_args,
               "description": self.workflow_description, "subtype": self.workflow_subtype,
               "agent_id": self.agent_id, "parent_workflow_id": self.parent_workflow_id}
        if isinstance(self._given_workflow_id, str):
            doc["workflow_id"] = self._given_workflow_id   # documents show the caller's id
        if not self.save_workflow:
            doc["save_workflow"] = False   # exports leave its workflow message out
        self.session.push_workflow({k: v for k, v in doc.items() if v is not None})
        self._adapters = []
        for item in interceptors:
            if isinstance(item, type):
                self._adapters.append(item.from_session(self.session).start(background=True))
            else:
                item.start()
                self._adapters.append(item)
        self.is_started = True
        return self

    def _resolve_interceptors(self) -> list:
        """Flowcept's ``interceptors``: adapters by name (registry group
        ``flowcept.adapters``; their classes) or objects with start()/stop().
        "instrumentation" (decorator capture) is always on here."""
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
        self.is_started = False
        if s is None or s.closed:
            return
        for adapter in reversed(getattr(self, "_adapters", ())):
            try:
                adapter.stop()
            except Exception as e:   # the run's own end must not fail on an observer
                import logging
                logging.getLogger("flowcept").error("flowcept: interceptor %r did not stop "
                                                    "cleanly: %s", adapter, e)
        self._adapters = []
        if s.drainer is not None:
            s.drainer.drain_once()   # room in the ring for the end record, even after drops
        s.push_workflow({"ended_at": time.time_ns()})
        if self._owns_session:
            runtime.end_session()

    def __enter__(self) -> "Flowcept":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    @property
    def run_dir(self) -> Optional[str]:
        return self.session.job.run_dir if self.session else None

    # -- Flowcept's service checks: nothing to start here -------------------
    @staticmethod
    def services_status() -> dict:
        """What Flowcept calls its services, as they stand here: the
        configured transport and store (the embedded store needs no server)."""
        from flowcept.config import ConfigError
        try:
            config = load_config()
        except ConfigError as e:
            return {"alive": False, "error": str(e)}
        out = {"enabled": config.enabled, "transport": config.transport, "store": config.store,
               "run_dir": config.run_dir, "alive": True}
        if config.transport_url:
            out["transport_url"] = _redact(config.transport_url)
        return out

    @staticmethod
    def services_alive() -> bool:
        """True when capture can run with the current configuration."""
        status = Flowcept.services_status()
        if not status["alive"]:
            log.error("flowcept: %s", status.get("error"))
        return bool(status["alive"])


def _redact(url: str) -> str:
    from flowcept.osutil import redact_url
    return redact_url(url)


