"""Flowcept's ``FlowceptTask``: a task recorded explicitly.

Flowcept's signature: nothing required (the activity id defaults to
``"task"``), ``task_id``/``parent_task_id``/``workflow_id`` as any string,
``used``, ``data``, ``subtype``, ``tags``, ``custom_metadata``,
``agent_id``; giving ``generated``, ``ended_at``, ``stdout``, ``stderr`` or
``status`` to the constructor ends the task at once.  As a context manager
the task is the parent of the tasks inside the block; an exception in the
block ends it with ERROR and its text in ``stderr``.
"""
from __future__ import annotations

from time import time_ns
from typing import Any, Dict, Optional, Sequence

from flowcept.capture.task import current_parent, current_task_id
from flowcept.commons.vocabulary import Status
from flowcept.instrumentation import _capture as C
from flowcept.record.payload import encode


class FlowceptTask:
    """Flowcept's FlowceptTask; also our own positional form
    ``FlowceptTask("solve", used={...})`` (the activity first) with
    ``begin()`` and ``end(error=exc)``."""

    def __init__(self, activity_id: Optional[str] = None, used: Optional[Dict] = None,
                 tags: Optional[Sequence[str]] = None, custom_metadata: Optional[Dict] = None, *,
                 task_id: Optional[str] = None, workflow_id: Optional[str] = None,
                 campaign_id: Optional[str] = None, agent_id: Optional[str] = None,
                 parent_task_id: Optional[str] = None, data: Any = None,
                 subtype: Optional[str] = None, generated: Optional[Dict] = None,
                 ended_at: Optional[float] = None, stdout: Optional[str] = None,
                 stderr: Optional[str] = None, status: Optional[Status] = None,
                 capture_telemetry: Optional[bool] = None, **fields: Any):
        self.activity_id = activity_id or "task"
        self.used = used
        self.data = data
        self.subtype = subtype
        self.tags = tags
        self.custom_metadata = custom_metadata
        self.agent_id = agent_id
        self.generated = None
        self._fields = fields   # Flowcept's agent_name, source_agent_id, ...: kept as given
        self._custom_task_id = task_id
        self._campaign_id = campaign_id
        self._ended = True
        self._token = None
        s = self._session = C.session()
        if s is None:
            return
        self._ended = False
        self.started_ns = time_ns()
        self.task_id = s.next_task_id()
        self._workflow = C.workflow_of(s, workflow_id)
        self._workflow_text = workflow_id if isinstance(workflow_id, str) else None
        parent = C.parent_int(parent_task_id)
        self._parent_text = parent_task_id if parent is None else None
        self.parent_id = current_parent() if parent_task_id is None else (parent or 0)
        self._telemetry = capture_telemetry if capture_telemetry is not None else C.telemetry_on()
        self._tel_start = C.telemetry() if self._telemetry else None
        if any(v is not None for v in (generated, ended_at, stdout, stderr, status)):
            self.end(generated=generated, ended_at=ended_at, stdout=stdout, stderr=stderr,
                     status=status or Status.FINISHED)

    @property
    def started_at(self) -> Optional[float]:
        return self.started_ns / 1e9 if hasattr(self, "started_ns") else None

    def __enter__(self) -> "FlowceptTask":
        if not self._ended and self._token is None:
            self._token = current_task_id.set(self.task_id)
        return self

    begin = __enter__   # our API: the tasks that follow are its children until end()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._ended:
            if exc is not None and not isinstance(exc, GeneratorExit):
                self.end(error=exc)
            else:
                self.end()
        return False

    def _reset(self) -> None:
        if self._token is not None:
            try:
                current_task_id.reset(self._token)
            except ValueError:   # ended in another context
                pass
            self._token = None

    def end(self, generated: Optional[Dict] = None, ended_at: Optional[float] = None,
            stdout: Optional[str] = None, stderr: Optional[str] = None, data: Any = None,
            custom_metadata: Optional[Dict] = None, status: Any = Status.FINISHED,
            error: Optional[BaseException] = None) -> None:
        if self._ended:
            return
        self._error = None
        if error is not None:
            from flowcept.capture.task import _error_doc
            self._error = _error_doc(error)
            stderr = stderr if stderr is not None else self._error.get("message")
            status = Status.ERROR
        if generated is not None:
            self.generated = generated
        if data is not None:
            self.data = data
        if custom_metadata is not None:
            self.custom_metadata = {**(self.custom_metadata or {}), **custom_metadata}
        end_ns = int(ended_at * 1e9) if ended_at else time_ns()
        code, text = C.status_code(status)
        self._push(end_ns, code, text, stdout, stderr)

    def send(self) -> "FlowceptTask":
        """Records the task as it is, ending when it started (a message)."""
        if not self._ended:
            self._push(self.started_ns, C.NATIVE_STATUS["FINISHED"], None, None, None)
        return self

    def _push(self, end_ns: int, code: int, status_text, stdout, stderr) -> None:
        self._ended = True
        self._reset()
        body: Dict[str, Any] = {"type": "task"}
        for key, value in (("used", self.used), ("generated", self.generated),
                           ("data", self.data), ("subtype", self.subtype),
                           ("agent_id", self.agent_id), ("stdout", stdout), ("stderr", stderr),
                           ("status", status_text), ("task_id", self._custom_task_id),
                           ("parent_task_id", self._parent_text),
                           ("workflow_id", self._workflow_text if self._workflow else None),
                           ("campaign_id", self._campaign_id)):
            if value is not None:
                body[key] = value
        if getattr(self, "_error", None):
            body["error"] = self._error
        if self.tags:
            body["tags"] = list(self.tags)
        if self.custom_metadata:
            body["custom_metadata"] = C.sanitize(dict(self.custom_metadata))
        for k, v in self._fields.items():
            if v is not None:
                body.setdefault(k, C.sanitize(v))
        if self._telemetry:
            body["telemetry_at_start"] = self._tel_start
            body["telemetry_at_end"] = C.telemetry()
        try:
            self._session.push(self.task_id, self.parent_id, self.started_ns, end_ns,
                               self.activity_id, code, encode(body), workflow_id=self._workflow)
        except Exception:   # provenance never breaks the science
            import logging
            logging.getLogger("flowcept").exception("flowcept: could not record task %s",
                                                    self.activity_id)


__all__ = ["FlowceptTask"]
