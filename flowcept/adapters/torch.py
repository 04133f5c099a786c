"""PyTorch instrumentation (Flowcept's ``flowcept_torch`` name kept).

``@flowcept_torch`` on an ``nn.Module`` subclass makes every instance:

* register itself as an entity once, at construction: a ``torch:model``
  record with its class, parameter count, largest parameter dimension and
  the type of each submodule (``generated``);
* record every forward call of the model (activity = the class name) with
  ``used`` = the batch index, the epoch and a dtype/shape/device summary of
  each tensor argument, ``generated`` = the same summary of the output,
  and ``custom_metadata`` = training flag and the model record's id; its
  parent is the enclosing captured task (e.g. a ``FlowceptEpochLoop``
  iteration), so epochs and batches nest;
* with ``children=True`` (constructor keyword ``capture_children``, default
  off: it costs a record per layer per batch), record each submodule's
  forward too (activity ``<Model>.<path>``), children of the model's
  forward record, through forward pre/post hooks.

Constructor keywords read (and passed on to the module's ``__init__``, as
in Flowcept, so a module that takes them declares ``**kwargs``):
``capture_enabled``, ``capture_children``, ``capture_at_every`` (record one
batch in N), ``capture_telemetry`` (CPU/memory/process/GPU snapshots at each
recorded forward's start and end, see ``telemetry``; off by default),
``custom_metadata``, ``parent_task_id``.  Tensor values are
never read (only dtype and shape), so capture adds no device sync.  The
forward's own result and exceptions are unchanged: an exception is
recorded as an ERROR record and re-raised.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED

_DT: Dict[Any, str] = {}
_OWN_KWARGS = ("capture_enabled", "capture_children", "capture_at_every", "capture_telemetry",
               "custom_metadata",
               "parent_task_id", "get_profile", "save_workflow", "campaign_id", "parent_workflow_id")


def _summ(x) -> Any:
    """dtype/shape/device of a tensor (or of the tensors in a tuple/list/dict)."""
    shape = getattr(x, "shape", None)
    if shape is not None and hasattr(x, "dtype"):
        dt = _DT.get(x.dtype)
        if dt is None:
            dt = _DT[x.dtype] = str(x.dtype)
        return {"dtype": dt, "shape": list(shape), "device": str(x.device)}
    if isinstance(x, (list, tuple)):
        return [_summ(v) for v in x[:16]]
    if isinstance(x, dict):
        return {str(k): _summ(v) for k, v in list(x.items())[:16]}
    if isinstance(x, (int, float, bool, str)) or x is None:
        return x
    return type(x).__name__


def _session():
    from flowcept.capture import session as runtime
    return runtime._session or runtime.ensure_session()


def _fast_session():
    """Per call: the active session without an import (bound once, below)."""
    from flowcept.capture import session as runtime

    def get():
        return runtime._session or runtime.ensure_session()
    return get


def _profile(model) -> dict:
    nparams, width = 0, 0
    for p in model.parameters():
        nparams += p.numel()
        if p.dim():
            width = max(width, max(p.shape))
    return {"class": type(model).__name__, "params": int(nparams), "max_width": int(width),
            "modules": {name or "": type(m).__name__ for name, m in model.named_modules()}}


def flowcept_torch(cls):
    """Class decorator for ``torch.nn.Module`` subclasses (see the module doc)."""
    from flowcept.capture.task import current_parent, current_task_id
    from flowcept.record.payload import encode
    session_now = _fast_session()

    import inspect
    try:
        params = inspect.signature(cls.__init__).parameters.values()
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
        names = {p.name for p in params}
    except (TypeError, ValueError):
        takes_kwargs, names = True, set()

    class FlowceptModule(cls):
        def __init__(self, *args, **kwargs):
            if takes_kwargs:
                super().__init__(*args, **kwargs)
            else:   # a module that does not take our keywords never sees them
                super().__init__(*args, **{k: v for k, v in kwargs.items()
                                           if k not in _OWN_KWARGS or k in names})
            self._fc_on = bool(kwargs.get("capture_enabled", True))
            if not self._fc_on:
                return
            self._fc_every = max(1, int(kwargs.get("capture_at_every", 1)))
            self._fc_meta = dict(kwargs.get("custom_metadata") or {})
            self._fc_parent = kwargs.get("parent_task_id") or 0
            self._fc_epoch = 0
            self._fc_batch = 0
            self._fc_name = cls.__name__
            self._fc_forward_id = 0
            self._fc_tel = None
            if kwargs.get("capture_telemetry", False):
                from flowcept.adapters.telemetry import telemetry
                self._fc_tel = telemetry()
            self._fc_tel_start = None
            self._fc_model_id = self._fc_register()
            if kwargs.get("capture_children", False):
                self._fc_hook_children()

        def _fc_register(self) -> int:
            s = _session()
            if s is None:
                return 0
            tid = s.next_task_id()
            now = time.time_ns()
            body = {"generated": _profile(self),
                    "custom_metadata": {"entity": "model", "framework": "torch", **self._fc_meta}}
            s.push(tid, self._fc_parent or current_parent(), now, now, "torch:model",
                   STATUS_FINISHED, encode(body), FLAG_PAYLOAD_MSGPACK)
            return tid

        def new_epoch(self, epoch: Optional[int] = None) -> None:
            """Marks the start of an epoch (FlowceptEpochLoop calls it)."""
            self._fc_epoch = self._fc_epoch + 1 if epoch is None else int(epoch)
            self._fc_batch = 0

        def forward(self, *args, **kwargs):
            d = self.__dict__   # plain attributes: nn.Module.__setattr__ costs microseconds
            if not d.get("_fc_on", False):
                return super().forward(*args, **kwargs)
            batch = d["_fc_batch"]
            d["_fc_batch"] = batch + 1
            s = session_now() if batch % d["_fc_every"] == 0 else None
            if s is None:
                return super().forward(*args, **kwargs)
            tid = s.next_task_id()
            parent = d["_fc_parent"] or current_parent()
            token = current_task_id.set(tid)
            d["_fc_forward_id"] = tid
            if d["_fc_tel"] is not None:
                d["_fc_tel_start"] = d["_fc_tel"].capture()
            start = time.time_ns()
            try:
                out = super().forward(*args, **kwargs)
            except BaseException as e:
                end = time.time_ns()
                current_task_id.reset(token)
                self._fc_push(s, tid, parent, start, end, args, None, STATUS_ERROR,
                              {"error": f"{type(e).__name__}: {e}"[:500]})
                raise
            end = time.time_ns()
            current_task_id.reset(token)
            self._fc_push(s, tid, parent, start, end, args, out, STATUS_FINISHED, None)
            return out

        def _fc_push(self, s, tid, parent, start, end, args, out, status, err) -> None:
            try:
                body = {"used": {"batch": self._fc_batch - 1, "epoch": self._fc_epoch,
                                 "tensors": [_summ(a) for a in args]},
                        "custom_metadata": {"module": self._fc_name, "training": self.training,
                                            "model_task_id": self._fc_model_id, **self._fc_meta}}
                if out is not None:
                    body["generated"] = {"tensor": _summ(out)}
                if self._fc_tel is not None:
                    body["custom_metadata"]["telemetry_at_start"] = self._fc_tel_start
                    body["custom_metadata"]["telemetry_at_end"] = self._fc_tel.capture()
                if err:
                    body["error"] = err["error"]
                s.push(tid, parent, start, end, self._fc_name, status, encode(body),
                       FLAG_PAYLOAD_MSGPACK)
            except Exception:   # provenance never breaks training
                pass

        def _fc_hook_children(self) -> None:
            stack = []
            model = self

            def pre(mod, inputs):
                stack.append(time.time_ns())

            def make_post(path, typename):
                activity = f"{model._fc_name}.{path}"

                def post(mod, inputs, output):
                    start = stack.pop() if stack else time.time_ns()
                    s = session_now()
                    if s is None or (model._fc_batch - 1) % model._fc_every:
                        return
                    try:
                        body = {"used": {"tensors": [_summ(a) for a in inputs]},
                                "generated": {"tensor": _summ(output)},
                                "custom_metadata": {"module_type": typename,
                                                    "batch": model._fc_batch - 1,
                                                    "epoch": model._fc_epoch}}
                        s.push(s.next_task_id(), model._fc_forward_id, start, time.time_ns(),
                               activity, STATUS_FINISHED, encode(body), FLAG_PAYLOAD_MSGPACK)
                    except Exception:
                        pass
                return post

            for path, mod in self.named_modules():
                if path:
                    mod.register_forward_pre_hook(pre)
                    mod.register_forward_hook(make_post(path, type(mod).__name__))

    FlowceptModule.__name__ = cls.__name__
    FlowceptModule.__qualname__ = cls.__qualname__
    FlowceptModule.__module__ = cls.__module__
    FlowceptModule.__doc__ = cls.__doc__
    return FlowceptModule


class FlowceptEpochLoop:
    """``for epoch in FlowceptEpochLoop(range(n), model): ...``: a captured
    loop (one task per epoch) that tells the model each new epoch, so its
    forward records carry the epoch and nest under that epoch's task."""

    def __init__(self, items, model, loop_name: str = "EpochLoop", item_name: str = "epoch"):
        from flowcept.capture.task import FlowceptLoop
        self._loop = FlowceptLoop(items, loop_name=loop_name, item_name=item_name)
        self.model = model

    def end_iter(self, generated: dict) -> None:
        self._loop.end_iter(generated)

    def __iter__(self):
        for i, item in enumerate(self._loop):
            if hasattr(self.model, "new_epoch"):
                self.model.new_epoch(i)
            yield item
