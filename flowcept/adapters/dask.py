"""Dask capture, Flowcept's way: every Dask task becomes one task record.

As a Flowcept user starts it::

    client.register_plugin(FlowceptDaskWorkerAdapter())
    with Flowcept("dask", dask_client=client):
        client.submit(...)

``Flowcept("dask", dask_client=client)`` starts the adapter registered as
``dask`` (``DaskAdapter``): it tells every worker the workflow's ids
(``dask_worker.current_workflow_id`` and ``current_campaign_id``, as
Flowcept does), adds ``adapter_id: "dask"`` and the cluster (``n_workers``,
``scheduler``) to the workflow document, and registers the worker plugin
when the client has none yet.  Without ``dask_client`` it takes the
process's current Dask client.

``FlowceptDaskWorkerAdapter`` (a ``WorkerPlugin``) runs inside each
worker, thread or process, and records each task that leaves
``executing`` as Flowcept 1.0.3 stores it: ``task_id`` the Dask key,
``workflow_id`` and ``campaign_id`` the ones the workers were told,
activity the function's name, ``used`` the arguments by parameter name
(keyword arguments as they are; a dependency by its key),
``generated`` the result (a dict as it is, any other value as ``arg0``, a
list or tuple as ``arg0``, ``arg1``, ...), ``started_at``/``ended_at``
from Dask's own ``startstops``, status FINISHED or ERROR with
``stderr`` = ``{"exception", "traceback"}``, the worker's ``address``,
and ``telemetry_at_start``/``telemetry_at_end`` when the settings'
``telemetry_capture`` asks for telemetry (or ``telemetry=True``).  Values
are encoded like any task's (numpy by summary, large values truncated at
``max_payload_bytes``).  ``lineage=True`` (ours, off by default: 1.0.3 does
not record it) adds ``dependencies`` (the keys) and makes the first
dependency the record's parent, so single-parent tools follow chains.
``FlowceptDaskSchedulerAdapter`` is the ``SchedulerPlugin`` counterpart for
clusters whose workers cannot be touched: the same record without the
arguments and result, made in the scheduler's process.  Register one of
the two, not both (they would record each task twice, under one id).

Record ids are derived from (workflow id, key), so a task's id is known in
every process without coordination.  Process workers: each worker process
starts its own capture session (its ring, its leader, a store under the
same run directory, the configuration from its environment and settings,
as the client's), ended in ``teardown``; a thread worker in the client's
process uses the client's session.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from flowcept.adapters.base import source_task_id
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED

try:   # the plugin base classes, when distributed is installed
    from distributed import SchedulerPlugin as _SchedulerPlugin
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:   # pragma: no cover - importable without dask; using it needs dask
    _SchedulerPlugin = _WorkerPlugin = object

WORKER_PLUGIN_NAME = "flowcept-dask-worker"


def _key_str(key) -> str:
    return key if isinstance(key, str) else repr(key)


def _activity(key, func=None) -> str:
    name = getattr(func, "__name__", None)
    if isinstance(name, str) and name:
        return name
    try:
        from dask.utils import key_split
        return key_split(key)
    except Exception:
        return _key_str(key)


def flowcept_shape(value: Any) -> Any:
    """A task's result as Flowcept stores ``generated``: a dict as it is,
    a list or tuple as ``{"arg0": ..., "arg1": ...}``, anything else as
    ``{"arg0": value}``."""
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)):
        return {f"arg{i}": v for i, v in enumerate(value)}
    return {"arg0": value}


def _telemetry_source(telemetry):
    """The snapshot maker: Flowcept's telemetry settings, or the default
    parts when telemetry is True; None for none."""
    if telemetry is False:
        return None
    if telemetry is True:
        from flowcept.adapters.telemetry import telemetry as shared
        return shared()
    try:
        from flowcept.adapters import flowcept_settings
        conf = flowcept_settings().get("telemetry_capture")
    except Exception:
        conf = None
    if conf and any(bool(v) for k, v in conf.items() if k != "machine_info"):
        from flowcept.adapters.telemetry import Telemetry
        return Telemetry(conf)
    return None


class _Recorder:
    """What both plugins share: ids, the session, the record."""

    def _init_recorder(self, session=None, workflow_id: Optional[int] = None, telemetry=None,
                       lineage: bool = False):
        if session is None:
            from flowcept.capture import session as runtime
            session = runtime.current()
        self.workflow_id = workflow_id or (session.workflow_id if session else 0)
        self._cfg = ({"run_dir": os.path.abspath(session.config.run_dir),
                      "shm_dir": session.config.shm_dir} if session else {})
        self._client_pid = os.getpid()
        self._session = session
        self._telemetry_opt = telemetry
        self._tel = None
        self._tel_ready = False
        self.lineage = lineage
        self.recorded = 0

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_session"] = None   # never pickled: a process starts its own
        d["_tel"], d["_tel_ready"] = None, False
        return d

    def _snapshot(self) -> Optional[dict]:
        if not self._tel_ready:
            self._tel, self._tel_ready = _telemetry_source(self._telemetry_opt), True
        return self._tel.capture() if self._tel is not None else None

    def _session_here(self):
        s = self._session
        if s is not None and not s.closed:
            return s
        from flowcept.capture import session as runtime
        cur = runtime.current()
        if cur is not None and not cur.closed:
            if os.getpid() != self._client_pid:
                self._owns = None   # another plugin of this process started it
            self._session = cur
        else:
            from flowcept.config import load_config
            cur = runtime.start_local_session(load_config(**self._cfg))
            self._owns = cur
            self._session = cur
        return self._session

    def _ids(self, holder) -> tuple:
        """(record workflow id, Flowcept workflow id, campaign id) as the
        workers were told (DaskAdapter), else this plugin's."""
        wf_str = getattr(holder, "current_workflow_id", None)
        wf_int = getattr(holder, "flowcept_workflow_id", None)
        if wf_int is None and isinstance(wf_str, str):
            from flowcept.capture.workflow import workflow_int_id
            wf_int = workflow_int_id(wf_str)
        return wf_int or self.workflow_id, wf_str, getattr(holder, "current_campaign_id", None)

    def task_id(self, key, workflow_id: Optional[int] = None) -> int:
        return source_task_id("dask", f"{workflow_id or self.workflow_id:x}:{_key_str(key)}")

    def _record(self, key, status: int, start_s: float, stop_s: float, holder, deps,
                body: Dict[str, Any]) -> None:
        try:
            s = self._session_here()
            if s is None:
                return
            from flowcept.record.payload import encode
            wf_int, wf_str, campaign = self._ids(holder)
            body["task_id"] = _key_str(key)
            if wf_str is not None:
                body["workflow_id"] = wf_str
            if campaign is not None:
                body["campaign_id"] = campaign
            parent = 0
            if self.lineage and deps:
                deps = sorted(_key_str(d) for d in deps)
                body["dependencies"] = deps
                parent = self.task_id(deps[0], wf_int)
            activity = body.pop("_activity", None) or _activity(key)
            s.push(self.task_id(key, wf_int), parent, int(start_s * 1e9), int(stop_s * 1e9),
                   activity, status, encode(body), FLAG_PAYLOAD_MSGPACK, workflow_id=wf_int)
            self.recorded += 1
        except Exception:   # provenance never breaks the computation
            pass


def _run_spec(ts):
    """(func, args, kwargs) of a worker's task, old (tuple) and new (Task) dask."""
    spec = getattr(ts, "run_spec", None)
    func = getattr(spec, "func", None)
    args = getattr(spec, "args", None)
    kwargs = getattr(spec, "kwargs", None)
    if func is None and isinstance(spec, tuple) and spec:
        func, args, kwargs = (list(spec) + [(), {}])[:3]
    return func, args or (), dict(kwargs or {})


def _arg(v):
    """A task argument as Flowcept records it: a dependency by its key."""
    for attr in ("key", "target"):   # dask TaskRef/Alias/DataNode, Future
        ref = getattr(v, attr, None)
        if isinstance(ref, (str, tuple)) and type(v).__module__.startswith(("dask", "distributed")):
            return _key_str(ref)
    return v


def _used(func, args, kwargs) -> dict:
    """Positional arguments by the function's parameter names (those
    beyond them are left out, as Flowcept does), keyword arguments as they
    are."""
    used: Dict[str, Any] = {}
    if args:
        try:
            import inspect
            names = list(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            names = [f"arg{i}" for i in range(len(args))]
        for k, v in zip(names, args):
            used[k] = _arg(v)
    for k, v in kwargs.items():
        used[str(k)] = _arg(v)
    return used


def _compute_span(startstops):
    for ss in startstops or ():
        if ss.get("action") == "compute":
            return ss["start"], ss["stop"]
    now = time.time()
    return now, now


def _set_workflow_on_workers(dask_worker, workflow_id, campaign_id=None, workflow_int=None):
    dask_worker.current_workflow_id = workflow_id
    if campaign_id:
        dask_worker.current_campaign_id = campaign_id
    if workflow_int:
        dask_worker.flowcept_workflow_id = workflow_int


def set_workflow_info_on_workers(dask_client, wf_obj) -> None:
    """Flowcept's name: tells every worker the workflow's ids (an object or
    dict with ``workflow_id`` and ``campaign_id``)."""
    get = wf_obj.get if isinstance(wf_obj, dict) else lambda k: getattr(wf_obj, k, None)
    dask_client.run(_set_workflow_on_workers, workflow_id=get("workflow_id"),
                    campaign_id=get("campaign_id"))


class FlowceptDaskWorkerAdapter(_Recorder, _WorkerPlugin):
    """Worker plugin: ``client.register_plugin(FlowceptDaskWorkerAdapter())``."""

    name = WORKER_PLUGIN_NAME

    def __init__(self, session=None, workflow_id: Optional[int] = None, telemetry=None,
                 capture_io: bool = True, lineage: bool = False):
        self._init_recorder(session, workflow_id, telemetry, lineage)
        self.capture_io = capture_io
        self._worker = None
        self._owns = None
        self._tel_start: Dict[Any, Any] = {}

    def setup(self, worker):
        self._worker = worker
        self._session_here()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "executing":
            tel = self._snapshot()
            if tel is not None:
                self._tel_start[key] = tel
            return
        if start != "executing" or finish not in ("memory", "error"):
            return
        w = self._worker
        ts = w.state.tasks.get(key) if w is not None else None
        begin, end = _compute_span(getattr(ts, "startstops", None))
        func, fargs, fkwargs = _run_spec(ts)
        body: Dict[str, Any] = {"_activity": _activity(key, func),
                                "address": getattr(w, "address", "")}
        if self.capture_io:
            try:
                body["used"] = _used(func, fargs, fkwargs)
                if finish == "memory":
                    data = getattr(w, "data", None)
                    mem = getattr(data, "fast", data)
                    if mem is not None and key in mem:
                        body["generated"] = flowcept_shape(mem[key])
            except Exception:   # an argument we cannot name: the record goes without it
                pass
        if finish == "error" and ts is not None:
            body["stderr"] = {"exception": getattr(ts, "exception_text", "") or "",
                              "traceback": getattr(ts, "traceback_text", "") or ""}
        tel_start = self._tel_start.pop(key, None)
        if tel_start is not None:
            body["telemetry_at_start"] = tel_start
            body["telemetry_at_end"] = self._snapshot()
        self._record(key, STATUS_FINISHED if finish == "memory" else STATUS_ERROR, begin, end, w,
                     [d.key for d in getattr(ts, "dependencies", ())], body)

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

    def __init__(self, session=None, workflow_id: Optional[int] = None, lineage: bool = False):
        self._init_recorder(session, workflow_id, False, lineage)
        self._scheduler = None
        self._owns = None

    async def start(self, scheduler):
        self._scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if start != "processing" or finish not in ("memory", "erred"):
            return
        ts = self._scheduler.tasks.get(key) if self._scheduler is not None else None
        begin, end = _compute_span(kwargs.get("startstops"))
        func, _a, _k = _run_spec(ts)
        body: Dict[str, Any] = {"_activity": _activity(key, func), "address": kwargs.get("worker", "")}
        if finish == "erred":
            body["stderr"] = {"exception": str(kwargs.get("exception_text", "")),
                              "traceback": str(kwargs.get("traceback_text", ""))}
        holder = self._scheduler if hasattr(self._scheduler, "current_workflow_id") else None
        self._record(key, STATUS_FINISHED if finish == "memory" else STATUS_ERROR, begin, end,
                     holder, [d.key for d in getattr(ts, "dependencies", ())], body)

    async def close(self):
        owned = getattr(self, "_owns", None)
        if owned is not None:
            from flowcept.capture import session as runtime
            if runtime.current() is owned:
                runtime.end_session()


class DaskAdapter:
    """The ``dask`` adapter: what ``Flowcept("dask", dask_client=client)``
    starts (see the module doc).  ``stop()`` leaves the plugins to the
    cluster: each worker's records are stored when the worker closes."""

    name = "dask"

    def __init__(self, session=None, *, dask_client=None, register_plugin: bool = True,
                 telemetry=None, lineage: bool = False):
        self.session = session
        self.client = dask_client
        self.register_plugin = register_plugin
        self.telemetry = telemetry
        self.lineage = lineage

    @classmethod
    def from_session(cls, session, **options: Any) -> "DaskAdapter":
        return cls(session, **options)

    def start(self, background: bool = False) -> "DaskAdapter":
        from flowcept.errors import ConfigError
        client = self.client
        if client is None:
            try:
                from distributed import Client
                client = Client.current()
            except (ImportError, ValueError):
                raise ConfigError("Flowcept('dask') needs the Dask client: "
                                  "Flowcept('dask', dask_client=client)") from None
        self.client = client
        s = self.session
        if s is None:
            from flowcept.capture.session import ensure_session
            s = self.session = ensure_session()
        from flowcept.adapters import current_workflow_ids
        wf_str, campaign = current_workflow_ids()
        client.run(_set_workflow_on_workers, workflow_id=wf_str or f"{s.workflow_id:016x}",
                   campaign_id=campaign, workflow_int=s.workflow_id)
        info = dict(client.scheduler_info())
        s.push_workflow({"adapter_id": "dask",
                         "custom_metadata": {"n_workers": len(info.get("workers", {})),
                                             "scheduler": info}})
        if self.register_plugin:
            has = client.run(lambda dask_worker: WORKER_PLUGIN_NAME in dask_worker.plugins)
            if not has or not all(has.values()):
                client.register_plugin(FlowceptDaskWorkerAdapter(s, telemetry=self.telemetry,
                                                                 lineage=self.lineage))
        return self

    def stop(self) -> None:
        return None


def register_dask_workflow(client, workflow_name: str = "dask", session=None,
                           scheduler: bool = False, telemetry=None, lineage: bool = False) -> int:
    """Records the cluster as a workflow and registers the worker plugin (or,
    with scheduler=True, the scheduler plugin); returns the workflow id."""
    if session is None:
        from flowcept.capture.session import ensure_session
        session = ensure_session()
    info = client.scheduler_info()
    session.push_workflow({"name": workflow_name, "adapter_id": "dask",
                           "custom_metadata": {"n_workers": len(info.get("workers", {})),
                                               "scheduler": info.get("address")}})
    plugin = (FlowceptDaskSchedulerAdapter(session, lineage=lineage) if scheduler
              else FlowceptDaskWorkerAdapter(session, telemetry=telemetry, lineage=lineage))
    client.register_plugin(plugin)
    return session.workflow_id
