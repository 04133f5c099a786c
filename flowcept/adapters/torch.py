"""PyTorch capture, Flowcept's way (``@flowcept_torch``).

``@flowcept_torch`` on an ``nn.Module`` subclass makes every instance a
workflow of its own, as Flowcept 1.0.3 does, driven by the settings'
``instrumentation.torch`` section (Flowcept's defaults without one:
``what: parent_and_children``, ``children_mode:
telemetry_and_tensor_inspection``, ``capture_epochs_at_every: 1``,
``register_workflow: true``):

* at construction it registers a workflow named after the class (a new
  workflow id; ``campaign_id`` and ``parent_workflow_id`` from the running
  ``Flowcept``; ``custom_metadata.workflow_type: "TorchModule"`` and, with
  the constructor keyword ``get_profile=True``, ``model_profile``: params,
  max_width, n_modules, modules, model_repr; ``used.capture_at_every``);
* ``what`` containing ``parent``: each forward of the model is a task of
  that workflow: activity the class name, subtype ``parent_forward``,
  ``custom_metadata.is_training``, its parent the task that was running
  when the model was built (or ``parent_task_id=`` / the epoch's task, see
  ``flowcept.instrumentation.flowcept_torch.FlowceptEpochLoop``), and in
  the first epoch ``used.tensor`` and
  ``generated.tensor`` (id, is_sparse, shape, device, nbytes, numel,
  density) plus the forward's keyword arguments;
* ``what`` containing ``children``: each forward of a direct child module
  is a task (subtype ``child_forward``, activity the child's class) under
  the model's forward; ``children_mode`` says what it records:
  ``tensor_inspection`` (the input tensor, the child's public attributes,
  the output tensor), ``telemetry`` (``telemetry_at_end``), both, or
  ``lightweight`` (neither).  After the first epoch tensor inspection
  stops (``telemetry_and_tensor_inspection`` goes on with telemetry; the
  others stop recording children), as in Flowcept;
* epochs: ``capture_epochs_at_every: N`` records forwards in every Nth
  epoch only.

Ours besides (opt-in): ``capture_at_every`` (constructor keyword) records one
forward in N within an epoch.  The forward's result and exceptions are the
module's own; a failed forward is recorded as ERROR and re-raised.
Constructor keywords read (and passed on to the module's ``__init__``, as
in Flowcept, unless its signature does not take them): ``capture_enabled``,
``get_profile``, ``custom_metadata``, ``parent_task_id``,
``parent_workflow_id``, ``campaign_id``, ``save_workflow``,
``capture_at_every``.
"""
from __future__ import annotations

import time
import uuid
from types import MethodType
from typing import Any, Dict, Optional

from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED, format_task_id

_OWN_KWARGS = ("capture_enabled", "get_profile", "custom_metadata", "parent_task_id",
               "parent_workflow_id", "campaign_id", "save_workflow", "capture_at_every")
DEFAULTS = {"what": "parent_and_children", "children_mode": "telemetry_and_tensor_inspection",
            "epoch_loop": "lightweight", "batch_loop": "lightweight", "capture_epochs_at_every": 1,
            "register_workflow": True}
PARENT_FORWARD = "parent_forward"
CHILD_FORWARD = "child_forward"


def torch_settings() -> Dict[str, Any]:
    """Flowcept's ``instrumentation.torch`` settings over its defaults."""
    from flowcept.adapters import flowcept_settings
    section = (flowcept_settings().get("instrumentation") or {}).get("torch")
    return {**DEFAULTS, **(section or {})} if section is not None else dict(DEFAULTS)


def _session():
    from flowcept.capture import session as runtime
    return runtime._session or runtime.ensure_session()


def _bind_session():
    """_session without the import per call (bound at first use)."""
    global _session
    from flowcept.capture import session as runtime

    def fast():
        return runtime._session or runtime.ensure_session()
    _session = fast


def inspect_tensor(t) -> Dict[str, Any]:
    """Flowcept's description of a tensor (density reads the values)."""
    import torch
    numel = t.numel()
    return {"id": id(t), "is_sparse": bool(t.is_sparse), "shape": list(t.shape),
            "device": str(t.device), "nbytes": int(t.nbytes), "numel": int(numel),
            "density": (torch.nonzero(t).size(0) / numel) if numel else 0.0}


def _public(module) -> Dict[str, Any]:
    """A child module's public attributes (Flowcept records them as used)."""
    import torch
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k == "forward" or callable(v):
            continue
        out[k] = inspect_tensor(v) if isinstance(v, torch.Tensor) else v
    return out


def model_profile(model) -> Dict[str, Any]:
    """params, max_width, n_modules, modules (type and public attributes of
    each module), model_repr."""
    import numpy as np
    nparams, width = 0, -1
    for p in model.parameters():
        nparams += p.numel()
        if p.dim():
            width = max(width, int(np.max(p.shape)))
    modules: Dict[str, Any] = {}
    for _name, child in model.named_children():   # as Flowcept does (it shows in children's used)
        child.__dict__["first_level_child"] = True

    def walk(m, in_named=None):
        key = f"{type(m).__name__}_{id(m)}"
        d = {"type": type(m).__name__}
        if in_named is not None:
            d["in_named"] = in_named
        d.update({k: v for k, v in m.__dict__.items() if not k.startswith("_") and not callable(v)})
        modules[key] = d
        for name, child in m.named_children():
            walk(child, name)
    walk(model)
    return {"params": int(nparams), "max_width": int(width), "n_modules": len(modules),
            "modules": modules, "model_repr": repr(model)}


def _telemetry():
    """Snapshots as Flowcept's telemetry settings ask (None: no telemetry)."""
    from flowcept.adapters import flowcept_settings
    conf = flowcept_settings().get("telemetry_capture")
    if conf and any(bool(v) for k, v in conf.items() if k != "machine_info"):
        from flowcept.adapters.telemetry import Telemetry
        return Telemetry(conf)
    return None


def _context_task() -> Optional[str]:
    """The running captured task's id, as documents show it (None: none)."""
    from flowcept.capture.task import current_task_id
    tid = current_task_id.get()
    s = _session()
    return format_task_id(s.workflow_id, tid) if tid and s is not None else None


def flowcept_torch(cls):
    """Class decorator for ``torch.nn.Module`` subclasses (see the module doc)."""
    import inspect
    try:
        params = inspect.signature(cls.__init__).parameters.values()
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
        names = {p.name for p in params}
    except (TypeError, ValueError):
        takes_kwargs, names = True, set()

    _bind_session()
    import torch
    from flowcept.record.payload import encode
    tensor_type = torch.Tensor

    class TorchModuleWrapper(cls):
        def __init__(self, *args, **kwargs):
            if takes_kwargs:
                super().__init__(*args, **kwargs)
            else:   # a module that does not take our keywords never sees them
                super().__init__(*args, **{k: v for k, v in kwargs.items()
                                           if k not in _OWN_KWARGS or k in names})
            self.__dict__["_fc_on"] = False
            s = _session()
            if s is None or not kwargs.get("capture_enabled", True):
                return
            try:
                self._fc_setup(s, kwargs)
            except Exception:   # provenance never breaks the model
                self.__dict__["_fc_on"] = False

        def _fc_setup(self, s, kwargs) -> None:
            from flowcept.adapters import current_workflow_ids
            from flowcept.capture.session import new_workflow_id
            run_wf, campaign = current_workflow_ids()
            cfg = torch_settings()
            what = cfg.get("what") or ""
            d = self.__dict__   # plain attributes: nn.Module.__setattr__ costs microseconds
            d["_fc_name"] = cls.__name__
            d["_fc_parent_on"] = "parent" in what
            d["_fc_every_epoch"] = max(1, int(cfg.get("capture_epochs_at_every") or 1))
            d["_fc_every"] = max(1, int(kwargs.get("capture_at_every", 1)))
            d["_fc_epoch"] = -1
            d["_fc_batch"] = 0
            d["_fc_forward_id"] = 0
            d["_fc_parent"] = kwargs.get("parent_task_id") or _context_task()
            mode = cfg.get("children_mode") or "lightweight"
            d["_fc_tel"] = _telemetry()
            d["_fc_children_mode"] = mode if "children" in what else None
            d["_fc_inspect_children"] = "inspection" in mode
            d["_fc_wf"] = new_workflow_id()
            d["_fc_wf_str"] = str(uuid.uuid4())
            self.workflow_id = d["_fc_wf_str"]
            self.parent_task_id = d["_fc_parent"]
            if kwargs.get("save_workflow", True) and cfg.get("register_workflow", True):
                meta = dict(kwargs.get("custom_metadata") or {})
                meta["workflow_type"] = "TorchModule"
                if kwargs.get("get_profile", False):
                    meta["model_profile"] = model_profile(self)
                doc = {"name": cls.__name__, "workflow_id": d["_fc_wf_str"],
                       "campaign_id": kwargs.get("campaign_id", campaign),
                       "parent_workflow_id": kwargs.get("parent_workflow_id", run_wf),
                       "custom_metadata": meta, "used": {"capture_at_every": d["_fc_every_epoch"]}}
                s.push_workflow({k: v for k, v in doc.items() if v is not None}, workflow_id=d["_fc_wf"])
            d["_fc_children"] = []
            if d["_fc_children_mode"] is not None:
                for _name, child in self.named_children():
                    child.__dict__["_fc_orig_forward"] = child.forward
                    child.__dict__["_fc_activity"] = type(child).__name__
                    child.forward = MethodType(_child_forward(self), child)
                    d["_fc_children"].append(child)
            d["_fc_on"] = True

        # -- Flowcept's loop hooks ----------------------------------------
        def new_epoch(self, parent_task_id=None) -> None:
            """A new epoch starts: its task is the parent of the forwards."""
            d = self.__dict__
            if not d.get("_fc_on"):
                return
            if parent_task_id is not None:
                d["_fc_parent"] = self.parent_task_id = parent_task_id
            if d["_fc_epoch"] >= 0 and d["_fc_inspect_children"]:
                d["_fc_inspect_children"] = False   # inspection costs a device sync: first epoch only
                if d["_fc_children_mode"] != "telemetry_and_tensor_inspection":
                    d["_fc_children_mode"] = None
            d["_fc_epoch"] += 1
            d["_fc_batch"] = 0

        def new_batch(self, parent_task_id=None) -> None:
            if parent_task_id is not None and self.__dict__.get("_fc_on"):
                self.__dict__["_fc_parent"] = self.parent_task_id = parent_task_id

        def forward(self, *args, **kwargs):
            d = self.__dict__
            if (not d.get("_fc_on") or not d["_fc_parent_on"]
                    or d["_fc_epoch"] % d["_fc_every_epoch"] != 0):
                return super().forward(*args, **kwargs)
            batch = d["_fc_batch"]
            d["_fc_batch"] = batch + 1
            s = _session() if batch % d["_fc_every"] == 0 else None
            if s is None:
                return super().forward(*args, **kwargs)
            tid = s.next_task_id()
            d["_fc_forward_id"] = tid
            start = time.time_ns()
            try:
                out = super().forward(*args, **kwargs)
            except BaseException as e:
                self._fc_push(s, tid, start, args, kwargs, None, STATUS_ERROR, e)
                raise
            self._fc_push(s, tid, start, args, kwargs, out, STATUS_FINISHED, None)
            return out

        def _fc_push(self, s, tid, start, args, kwargs, out, status, err) -> None:
            try:
                d = self.__dict__
                first = d["_fc_epoch"] < 1
                used: Dict[str, Any] = {}
                if first and args and isinstance(args[0], tensor_type):
                    used["tensor"] = inspect_tensor(args[0])
                used.update(kwargs)
                body: Dict[str, Any] = {"used": used, "subtype": PARENT_FORWARD,
                                        "custom_metadata": {"is_training": self.training}}
                if d["_fc_parent"]:
                    body["parent_task_id"] = d["_fc_parent"]
                if first and isinstance(out, tensor_type):
                    body["generated"] = {"tensor": inspect_tensor(out)}
                if d["_fc_tel"] is not None:
                    body["telemetry_at_end"] = d["_fc_tel"].capture()
                if err is not None:
                    body["error"] = f"{type(err).__name__}: {err}"[:500]
                s.push(tid, 0, start, time.time_ns(), d["_fc_name"], status, encode(body),
                       FLAG_PAYLOAD_MSGPACK, workflow_id=d["_fc_wf"])
            except Exception:   # provenance never breaks training
                pass

    def _child_forward(model):
        plain_body = encode({"subtype": CHILD_FORWARD})   # a lightweight child's payload, once
        now = time.time_ns

        def forward(child, *args, **kwargs):
            start = now()
            out = child._fc_orig_forward(*args, **kwargs)
            d = model.__dict__
            mode = d.get("_fc_children_mode")
            parent = d.get("_fc_forward_id")
            if mode is None or not parent:
                return out
            try:
                s = _session()
                data = plain_body
                tel = d["_fc_tel"] if "telemetry" in mode else None
                inspect = d["_fc_inspect_children"] and args and isinstance(args[0], tensor_type)
                if tel is not None or inspect:
                    body: Dict[str, Any] = {"subtype": CHILD_FORWARD}
                    if tel is not None:
                        body["telemetry_at_end"] = tel.capture()
                    if inspect:
                        body["used"] = {"tensor": inspect_tensor(args[0]), **_public(child)}
                        if isinstance(out, tensor_type):
                            body["generated"] = {"tensor": inspect_tensor(out)}
                    data = encode(body)
                s.push(s.next_task_id(), parent, start, now(), child._fc_activity, STATUS_FINISHED,
                       data, FLAG_PAYLOAD_MSGPACK, workflow_id=d["_fc_wf"])
            except Exception:   # provenance never breaks training
                pass
            return out
        return forward

    TorchModuleWrapper.__name__ = cls.__name__
    TorchModuleWrapper.__qualname__ = cls.__qualname__
    TorchModuleWrapper.__module__ = cls.__module__
    TorchModuleWrapper.__doc__ = cls.__doc__
    return TorchModuleWrapper
