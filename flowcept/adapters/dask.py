"""Dask instrumentation: every Dask task becomes one task record.

``FlowceptDaskWorkerAdapter`` (Flowcept's name) is a ``WorkerPlugin``: it
runs inside each worker, thread or process, and records each task that
leaves ``executing``: key, activity (the key's prefix, ``inc`` for
``inc-<hash>``), worker address, the executing thread, start/end from
Dask's own ``startstops``, status (``memory`` -> FINISHED, ``error`` ->
ERROR with the exception text), its dependencies, and (``capture_io``, on
by default as in Flowcept) its arguments in ``used`` and its result in
``generated``, encoded like any task's values (numpy by summary, large
values truncated at ``max_payload_bytes``).
With ``telemetry=True`` the worker plugin adds CPU/memory/process (and
GPU) snapshots taken as each task starts and ends (``telemetry``).
``FlowceptDaskSchedulerAdapter`` is the ``SchedulerPlugin`` counterpart for
clusters whose workers cannot be touched: the same record, made in the
scheduler's process from its ``task-finished`` / ``task-erred`` messages.
Register one of the two, not both (they would record each task twice, with
the same record id).

Lineage: record ids are derived from (workflow id, key), so a task's
dependencies are known ids without any coordination between processes:
``used["dependencies"]`` lists the keys, ``custom_metadata
["dependency_task_ids"]`` their task ids, and ``parent_task_id`` is the
first dependency (by key), so single-parent tools follow chains.

Process workers: the plugin is pickled to each worker process with the
client's run directory, shared-memory directory and workflow id; a worker
process starts its own capture session (its own ring and leader, a store
under the same run directory), ended in ``teardown``.  A thread worker in
the client's process uses the client's session.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from flowcept.adapters.base import source_task_id
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED, format_task_id

try:   # the plugin base classes, when distributed is installed
    from distributed import SchedulerPlugin as _SchedulerPlugin
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:   # pragma: no cover - importable without dask; using it needs dask
    _SchedulerPlugin = _WorkerPlugin = object


def _key_str(key) -> str:
    return key if isinstance(key, str) else repr(key)


def _activity(key) -> str:
    try:
        from dask.utils import key_split
        return key_split(key)
    except Exception:
        return _key_str(key)


class _Recorder:
    """What both plugins share: ids, the session, the record."""

    def _init_recorder(self, session=None, workflow_id: Optional[int] = None,
                       telemetry: bool = False):
        if session is None:
            from flowcept.capture.session import ensure_session
            session = ensure_session()
        self.workflow_id = workflow_id or (session.workflow_id if session else 0)
        self._cfg = ({"run_dir": os.path.abspath(session.config.run_dir),
                      "shm_dir": session.config.shm_dir} if session else {})
        self._client_pid = os.getpid()
        self._session = session
        self._telemetry = telemetry
        self.recorded = 0

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_session"] = None   # never pickled: a process starts its own
        return d

    def _session_here(self):
        s = self._session
        if s is not None and not s.closed:
            return s
        from flowcept.capture import session as runtime
        cur = runtime.current()
        if cur is not None and not cur.closed and os.getpid() == self._client_pid:
            self._session = cur
        elif self._cfg:
            from flowcept.config import load_config
            cur = runtime.current()
            if cur is None or cur.closed:
                cur = runtime.start_local_session(load_config(**self._cfg),
                                                  workflow_id=self.workflow_id)
            self._owns = cur
            self._session = cur
        return self._session

    def task_id(self, key) -> int:
        return source_task_id("dask", f"{self.workflow_id:x}:{_key_str(key)}")

    def _record(self, key, status: int, start_s: float, stop_s: float, worker: str,
                thread: Optional[int], deps, extra: Dict[str, Any], io=None) -> None:
        try:
            s = self._session_here()
            if s is None:
                return
            from flowcept.record.payload import encode
            deps = sorted(_key_str(d) for d in deps)
            dep_ids = [self.task_id(d) for d in deps]
            meta = {"adapter": "dask", "key": _key_str(key), "worker": worker, "thread": thread,
                    "dependency_task_ids": [format_task_id(self.workflow_id, t) for t in dep_ids]}
            meta.update(extra)
            used = {"key": _key_str(key), "dependencies": deps}
            body = {"used": used, "custom_metadata": meta}
            if io:
                used.update(io[0])
                if io[1] is not None:
                    body["generated"] = io[1]
            if self._telemetry:
                from flowcept.adapters.telemetry import telemetry
                meta["telemetry_at_end"] = telemetry().capture()
            s.push(self.task_id(key), dep_ids[0] if dep_ids else 0, int(start_s * 1e9),
                   int(stop_s * 1e9), _activity(key), status, encode(body), FLAG_PAYLOAD_MSGPACK)
            self.recorded += 1
        except Exception:   # provenance never breaks the computation
            pass


def _io(ts, worker, key, finish):
    """(arguments, result) of a task as the worker holds them: positional
    arguments by the function's parameter names, keyword arguments as they
    are, a dependency's value named by its key; the result from the
    worker's memory (None when it erred or was spilled)."""
    try:
        spec = getattr(ts, "run_spec", None)
        func = getattr(spec, "func", None)
        args = getattr(spec, "args", None)
        kwargs = getattr(spec, "kwargs", None)
        if func is None and isinstance(spec, tuple) and spec:   # older dask: (func, args, kwargs)
            func, args, kwargs = (list(spec) + [(), {}])[:3]
        used: Dict[str, Any] = {}
        names = []
        try:
            import inspect
            for prm in inspect.signature(func).parameters.values():
                if prm.kind not in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD):
                    break   # *args and after: by position
                names.append(prm.name)
        except (TypeError, ValueError):
            pass
        for i, a in enumerate(args or ()):
            ref = getattr(a, "key", None)   # a dependency: named by its key, never copied
            used[names[i] if i < len(names) else f"arg_{i}"] = (
                {"dask_key": _key_str(ref)} if ref is not None else a)
        for k, v in dict(kwargs or {}).items():
            ref = getattr(v, "key", None)
            used[str(k)] = {"dask_key": _key_str(ref)} if ref is not None else v
        result = None
        if finish == "memory":
            data = getattr(worker, "data", None)
            if data is not None and key in getattr(data, "fast", data):
                result = {"return": data[key]}
        return used, result
    except Exception:
        return {}, None


def _compute_span(startstops):
    for ss in startstops or ():
        if ss.get("action") == "compute":
            return ss["start"], ss["stop"]
    now = time.time()
    return now, now


class FlowceptDaskWorkerAdapter(_Recorder, _WorkerPlugin):
    """Worker plugin: ``client.register_plugin(FlowceptDaskWorkerAdapter())``
    (in the process that holds the capture session: its workflow id and
    run directory travel with the plugin)."""

    name = "flowcept-dask-worker"

    def __init__(self, session=None, workflow_id: Optional[int] = None, telemetry: bool = False,
                 capture_io: bool = True):
        self._init_recorder(session, workflow_id, telemetry)
        self.capture_io = capture_io
        self._worker = None
        self._owns = None
        self._tel_start: Dict[Any, Any] = {}

    def setup(self, worker):
        self._worker = worker
        self._session_here()

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and self._telemetry:
            from flowcept.adapters.telemetry import telemetry
            self._tel_start[key] = telemetry().capture()
            return
        if start != "executing" or finish not in ("memory", "error"):
            return
        w = self._worker
        ts = w.state.tasks.get(key) if w is not None else None
        begin, end = _compute_span(getattr(ts, "startstops", None))
        extra = {"dask_state": finish}
        if self._telemetry:
            extra["telemetry_at_start"] = self._tel_start.pop(key, None)
        if finish == "error" and ts is not None:
            extra["error"] = (getattr(ts, "exception_text", "") or "")[:500]
        io = _io(ts, w, key, finish) if self.capture_io else None
        self._record(key, STATUS_FINISHED if finish == "memory" else STATUS_ERROR, begin, end,
                     getattr(w, "address", ""), getattr(w, "threads", {}).get(key),
                     [d.key for d in getattr(ts, "dependencies", ())], extra, io)

    def teardown(self, worker):
        owned = getattr(self, "_owns", None)
        if owned is not None:
            from flowcept.capture import session as runtime
            if runtime.current() is owned:
                runtime.end_session()   # drains this worker's records into its store
            self._owns = None


class FlowceptDaskSchedulerAdapter(_Recorder, _SchedulerPlugin):
    """Scheduler plugin: ``client.register_plugin(FlowceptDaskSchedulerAdapter())``,
    or ``dask scheduler --preload`` a module that adds it."""

    name = "flowcept-dask-scheduler"

    def __init__(self, session=None, workflow_id: Optional[int] = None):
        self._init_recorder(session, workflow_id)
        self._scheduler = None
        self._owns = None

    async def start(self, scheduler):
        self._scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if start != "processing" or finish not in ("memory", "erred"):
            return
        ts = self._scheduler.tasks.get(key) if self._scheduler is not None else None
        begin, end = _compute_span(kwargs.get("startstops"))
        extra = {"dask_state": finish}
        if finish == "erred":
            extra["error"] = str(kwargs.get("exception_text", ""))[:500]
        self._record(key, STATUS_FINISHED if finish == "memory" else STATUS_ERROR, begin, end,
                     kwargs.get("worker", ""), kwargs.get("thread"),
                     [d.key for d in getattr(ts, "dependencies", ())], extra)

    async def close(self):
        owned = getattr(self, "_owns", None)
        if owned is not None:
            from flowcept.capture import session as runtime
            if runtime.current() is owned:
                runtime.end_session()


def register_dask_workflow(client, workflow_name: str = "dask", session=None,
                           scheduler: bool = False, telemetry: bool = False) -> int:
    """Records the cluster as a workflow and registers the worker plugin (or,
    with scheduler=True, the scheduler plugin); returns the workflow id."""
    if session is None:
        from flowcept.capture.session import ensure_session
        session = ensure_session()
    info = client.scheduler_info()
    session.push_workflow({"name": workflow_name, "workflow_type": "DaskWorkflow",
                           "scheduler": info.get("address"), "n_workers": len(info.get("workers", {}))})
    plugin = (FlowceptDaskSchedulerAdapter(session) if scheduler
              else FlowceptDaskWorkerAdapter(session, telemetry=telemetry))
    client.register_plugin(plugin)
    return session.workflow_id
