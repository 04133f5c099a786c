"""``Flowcept``: a workflow run, as a context manager or start()/stop()."""
from __future__ import annotations

import getpass
import os
import socket
import time
from typing import Any, Optional

from flowcept.capture import session as runtime
from flowcept.config import load_config


class Flowcept:
    """Starts capture for a workflow::

        with Flowcept(workflow_name="heat", campaign_id="c1"):
            run()

    Keyword arguments that are configuration keys (``run_dir``,
    ``transport``, ...) override the environment and settings file.  When this
    object started the process's session it also ends it at stop(), which
    drains every record into the store.
    """

    def __init__(self, workflow_name: Optional[str] = None, *, campaign_id: Optional[str] = None,
                 workflow_id: Optional[int] = None, workflow_args: Optional[dict] = None,
                 settings_path: Optional[str] = None, **config_overrides: Any):
        self.workflow_name = workflow_name or "workflow"
        self.campaign_id = campaign_id
        self.workflow_args = workflow_args
        self._workflow_id = workflow_id
        self._settings_path = settings_path
        self._overrides = config_overrides
        self._owns_session = False
        self.session: Optional[runtime.Session] = None

    @property
    def workflow_id(self) -> Optional[int]:
        return self.session.workflow_id if self.session else self._workflow_id

    def start(self) -> "Flowcept":
        config = load_config(self._settings_path, **self._overrides)
        if not config.enabled:
            return self
        existing = runtime.current()
        if existing is not None and not existing.closed:
            self.session = existing
            if self._workflow_id:
                existing.workflow_id = self._workflow_id
        else:
            self.session = runtime.start_local_session(config, workflow_id=self._workflow_id)
            self._owns_session = True
        self._previous_workflow = None
        doc = {"name": self.workflow_name, "campaign_id": self.campaign_id,
               "user": _user(), "hostname": socket.gethostname(), "pid": os.getpid(),
               "job": self.session.job.job_name, "started_at": time.time_ns(),
               "workflow_args": self.workflow_args}
        self.session.push_workflow({k: v for k, v in doc.items() if v is not None})
        return self

    def stop(self) -> None:
        s = self.session
        if s is None or s.closed:
            return
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


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
