"""Flowcept's ``FlowceptLoop`` and ``FlowceptLightweightLoop``.

``FlowceptLoop(items, loop_name="loop", item_name="item", parent_task_id=None,
workflow_id=None, items_length=None, capture_enabled=True)``: our loop
(flowcept.capture.task.FlowceptLoop: one task for the loop, one child task
``{loop_name}_iteration`` per iteration, ``end_iter(generated)``) with
Flowcept's arguments: ``items`` may be an int (a range) or any iterator
(``items_length`` gives ``len()``), ``capture_enabled=False`` iterates
without recording, and ``next(loop)`` works as on Flowcept's iterator.
Flowcept's document shape (the ``i`` key, subtypes ``whole_loop`` and
``iteration``) is given at read time (flowcept.flowcept_api.db).  The loop's
parent is the enclosing task and its workflow the current one:
``parent_task_id`` and ``workflow_id`` are accepted and kept on the object.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Union

from flowcept.capture import task as _ours


class FlowceptLoop(_ours.FlowceptLoop):
    def __init__(self, items: Union[Iterable, int], loop_name: str = "loop",
                 item_name: str = "item", parent_task_id: Optional[str] = None,
                 workflow_id: Optional[str] = None, items_length: Optional[int] = None,
                 capture_enabled: bool = True, capture_items: bool = True):
        if isinstance(items, int) and not isinstance(items, bool):
            items = range(items)
        if not hasattr(items, "__iter__"):
            raise TypeError("FlowceptLoop needs an iterable, an iterator or an int, "
                            f"got {type(items).__name__}")
        if items_length is None and hasattr(items, "__len__"):
            items_length = _length(items)
        elif items_length is not None and not hasattr(items, "__len__"):
            items = _Sized(items, items_length)   # our loop records the length it can read
        super().__init__(items, loop_name=loop_name, item_name=item_name,
                         capture_items=capture_items)
        self.items_length = items_length
        self.parent_task_id = parent_task_id
        self.workflow_id = workflow_id
        self.capture_enabled = capture_enabled
        self._gen = None
        if not capture_enabled:
            self.end_iter = _noop

    def __iter__(self):
        if not self.capture_enabled:
            return iter(self.items)
        return super().__iter__()

    def __next__(self):
        if self._gen is None:
            self._gen = self.__iter__()
        return next(self._gen)

    def __len__(self) -> int:
        if self.items_length is None:
            raise TypeError("this FlowceptLoop iterates an iterator: pass items_length for len()")
        return self.items_length


class _Sized:
    def __init__(self, it, n):
        self._it, self._n = it, n

    def __iter__(self):
        return iter(self._it)

    def __len__(self):
        return self._n


def _noop(*args, **kwargs) -> None:
    return None


def flowcept_loop(items, loop_name: str = "loop", item_name: str = "item", **kwargs) -> FlowceptLoop:
    """Flowcept's function form of FlowceptLoop."""
    return FlowceptLoop(items, loop_name=loop_name, item_name=item_name, **kwargs)


class FlowceptLightweightLoop:
    """One task for the whole loop: ``used`` = ``{"items": n}``, ``generated``
    = ``{"iterations": [what end_iter got, per iteration]}``, so that long
    loops cost one record."""

    def __init__(self, items: Union[Iterable, int], loop_name: str = "loop",
                 item_name: str = "item", parent_task_id: Optional[str] = None,
                 workflow_id: Optional[str] = None, items_length: Optional[int] = None,
                 capture_enabled: bool = True):
        if isinstance(items, int) and not isinstance(items, bool):
            items = range(items)
        if items_length is None and hasattr(items, "__len__"):
            items_length = _length(items)
        self._items = items
        self._max = items_length
        self.loop_name = loop_name
        self.item_name = item_name
        self._parent_task_id = parent_task_id
        self._workflow_id = workflow_id
        self._capture = capture_enabled
        self._values: list = []

    def __len__(self) -> int:
        if self._max is None:
            raise TypeError("pass items_length for len()")
        return self._max

    def end_iter(self, generated_value: Dict) -> None:
        if self._capture:
            self._values.append(generated_value)

    def __iter__(self):
        if not self._capture:
            yield from self._items
            return
        from flowcept.instrumentation.task_capture import FlowceptTask
        count = 0
        task = FlowceptTask(activity_id=self.loop_name, subtype="whole_loop",
                            parent_task_id=self._parent_task_id, workflow_id=self._workflow_id,
                            used={"items": self._max} if self._max is not None else None)
        try:
            for item in self._items:
                count += 1
                yield item
        finally:
            task.end(generated={"iterations": list(self._values), "count": count})


__all__ = ["FlowceptLoop", "FlowceptLightweightLoop", "flowcept_loop"]


def _length(items):
    """len(items), or None when the object's __len__ fails (capture must not raise)."""
    try:
        return len(items)
    except Exception:
        return None
