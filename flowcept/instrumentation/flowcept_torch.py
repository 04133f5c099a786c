"""Flowcept's ``flowcept.instrumentation.flowcept_torch``: ``@flowcept_torch``
(implemented in flowcept.adapters.torch) and the epoch and batch loops that
tell a model which task its forwards belong to."""
from typing import Optional

from flowcept.adapters.torch import (_context_task, flowcept_torch,  # noqa: F401
                                     model_profile, torch_settings)
from flowcept.instrumentation.flowcept_loop import FlowceptLightweightLoop, FlowceptLoop

get_torch_model_profile = model_profile


def _loop_class(which: str):
    """Flowcept's ``<which>_loop`` setting: lightweight, default, or None (off)."""
    mode = torch_settings().get(f"{which}_loop", "default")
    return None if mode is None else FlowceptLightweightLoop if mode == "lightweight" else FlowceptLoop


class FlowceptEpochLoop:
    """``for epoch in FlowceptEpochLoop(range(n), model): ...``: the epochs
    (activity ``epochs_loop``, item ``epoch``), each the parent of the
    model's forwards in it (``model.new_epoch``)."""

    ACTIVITY_ID = "epochs_loop"

    def __init__(self, items, model, parent_task_id=None, workflow_id=None,
                 capture_enabled: bool = True):
        self.model = model
        self.items = items
        cls = _loop_class("epoch") if capture_enabled else None
        self.enabled = cls is not None
        self.workflow_id = workflow_id
        self._loop = cls(items, loop_name=self.ACTIVITY_ID, item_name="epoch",
                         parent_task_id=parent_task_id, workflow_id=workflow_id) if cls else None

    def end_iter(self, generated: dict) -> None:
        if self._loop is not None:
            self._loop.end_iter(generated)

    def get_current_iteration_id(self) -> Optional[str]:
        return _context_task()

    def __iter__(self):
        new_epoch = getattr(self.model, "new_epoch", None)
        for item in (self._loop if self._loop is not None else self.items):
            if new_epoch is not None:
                new_epoch(_context_task() if self._loop is not None else None)
            yield item


class FlowceptBatchLoop:
    """``for batch in FlowceptBatchLoop(loader, epochs_loop=epochs): ...``:
    the batches of an epoch (activity ``<step>_batch``), each the parent of
    the model's forwards in it (``model.new_batch``); not captured without an
    epoch loop."""

    def __init__(self, items, epochs_loop: Optional[FlowceptEpochLoop] = None, parent_task_id=None,
                 workflow_id=None, step: str = "train", items_length: int = 0,
                 capture_enabled: bool = True):
        self.items = items
        self._epochs_loop = epochs_loop
        self.activity_id = f"{step}_batch"
        cls = _loop_class("batch") if (capture_enabled and epochs_loop is not None
                                       and epochs_loop.enabled) else None
        self.enabled = cls is not None
        self._loop = cls(items, loop_name=self.activity_id, item_name="batch",
                         parent_task_id=parent_task_id, workflow_id=workflow_id,
                         items_length=items_length or None) if cls else None

    def end_iter(self, generated: dict) -> None:
        if self._loop is not None:
            self._loop.end_iter(generated)

    def __iter__(self):
        if self._loop is None:
            yield from self.items
            return
        new_batch = getattr(self._epochs_loop.model, "new_batch", None)
        for item in self._loop:
            if new_batch is not None:
                new_batch(_context_task())
            yield item
