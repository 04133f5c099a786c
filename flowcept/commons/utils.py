"""Flowcept's ``flowcept.commons.utils`` helpers that Flowcept programs and
tests use."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional


class ClassProperty:
    """A read-only property on the class."""

    def __init__(self, fget):
        self.fget = fget

    def __get__(self, obj, cls=None):
        return self.fget(cls if cls is not None else type(obj))


def replace_non_serializable(obj: Any) -> Any:
    """Values JSON cannot hold become 'object_instance_id_<id>' strings."""
    from flowcept.instrumentation._capture import sanitize
    return sanitize(obj)


def assert_by_querying_tasks_until(filter: dict, condition_to_evaluate: Optional[Callable] = None,
                                   max_trials: int = 30, max_time: float = 60) -> bool:
    """Queries tasks until condition_to_evaluate(docs) holds (or, without a
    condition, until some task matches); False after max_trials or max_time."""
    from flowcept.flowcept_api.flowcept_controller import Flowcept
    start = time.monotonic()
    for _ in range(max(1, max_trials)):
        docs = Flowcept.db.task_query(filter)
        if (condition_to_evaluate(docs) if condition_to_evaluate else bool(docs)):
            return True
        if time.monotonic() - start > max_time:
            break
        time.sleep(min(1.0, max_time / max(1, max_trials)))
    return False


def evaluate_until(evaluation_condition: Callable[[], Any], max_trials: int = 30, max_time: float = 60,
                   msg: str = "") -> bool:
    """Calls evaluation_condition() once a second until it returns a true
    value (True) or until max_trials calls or max_time seconds (False), as
    Flowcept's own helper; msg names the condition in the debug log."""
    import logging
    start = time.monotonic()
    trials = 0
    while trials < max_trials and time.monotonic() - start < max_time:
        if evaluation_condition():
            return True
        trials += 1
        logging.getLogger("flowcept").debug("condition not met yet (%d/%d): %s", trials, max_trials, msg)
        time.sleep(1)
    return False


__all__ = ["ClassProperty", "replace_non_serializable", "assert_by_querying_tasks_until",
           "evaluate_until"]
