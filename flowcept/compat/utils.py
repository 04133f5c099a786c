"""Flowcept's ``flowcept.commons.utils`` helpers that Flowcept programs and
tests use, and its ``docdb_dao_utils``."""
from __future__ import annotations

import os
import threading
import time
import types
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional


class ClassProperty:
    """A read-only property on the class."""

    def __init__(self, fget):
        self.fget = fget

    def __get__(self, obj, cls=None):
        return self.fget(cls if cls is not None else type(obj))


def replace_non_serializable(obj: Any) -> Any:
    """What Flowcept records for a value: JSON values as they are (tuples as
    lists), an object whose class defines ``to_flowcept_dict``/``to_dict``
    as that, an argparse.Namespace as its fields, anything else as
    ``<Class>_instance_id_<id>``."""
    if isinstance(obj, dict):
        return {k: replace_non_serializable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [replace_non_serializable(v) for v in obj]
    if obj is None or isinstance(obj, (int, float, bool, str)):
        return obj
    from flowcept.record.payload import flowcept_text
    return flowcept_text(obj)


def assert_by_querying_tasks_until(filter: dict, condition_to_evaluate: Optional[Callable] = None,
                                   max_trials: int = 10, max_time: float = 60) -> bool:
    """Queries tasks until condition_to_evaluate(docs) holds (or, without a
    condition, until some task matches); False after max_trials or max_time."""
    from flowcept.compat.controller import Flowcept
    start = time.monotonic()
    trials = 0
    while time.monotonic() - start < max_time and trials < max(1, max_trials):
        docs = Flowcept.db.query(filter=filter, collection="tasks")
        try:
            if condition_to_evaluate(docs) if condition_to_evaluate else bool(docs):
                return True
        except Exception:   # Flowcept keeps trying on a condition that raises
            pass
        trials += 1
        time.sleep(1)
    return False


def evaluate_until(evaluation_condition: Callable, max_trials: int = 30, max_time: float = 60,
                   msg: str = "") -> bool:
    """Calls evaluation_condition() once a second until it is true (True);
    False after max_trials calls or max_time seconds; msg names the condition
    in the debug log."""
    import logging
    start = time.monotonic()
    trials = 0
    while trials < max_trials and time.monotonic() - start < max_time:
        if evaluation_condition():
            return True
        trials += 1
        logging.getLogger("flowcept").debug("condition not met yet (%d/%d): %s", trials,
                                            max_trials, msg)
        time.sleep(1)
    return False


def get_current_config_values() -> Dict[str, Any]:
    """Every constant of ``flowcept.configs`` and its value."""
    from flowcept.compat import configs
    out = {}
    for name in dir(configs):
        if name.startswith("_"):
            continue
        value = getattr(configs, name)
        if not isinstance(value, (types.ModuleType, types.FunctionType)):
            out[name] = value
    out["ADAPTERS"] = list(out.get("ADAPTERS", []))
    return out


def generate_pseudo_id() -> str:
    return f"{os.getpid()}_{threading.get_ident()}"


def get_utc_now() -> float:
    return datetime.now(timezone.utc).timestamp()


def get_utc_now_str() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def chunked(iterable, size):
    for i in range(0, len(iterable), size):
        yield iterable[i:i + size]


def to_epoch(value: Any) -> Optional[float]:
    """A timestamp as epoch seconds: epoch seconds or milliseconds, an ISO
    string or a datetime; None when it is none of these."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value / 1000.0 if value >= 1e12 else float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt.replace(tzinfo=timezone.utc).timestamp() if dt.tzinfo is None else dt.timestamp()
    if isinstance(value, datetime):
        return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value).timestamp()
    return None


def get_nested(doc: Any, path: str) -> Any:
    """doc's value at a dotted path, or None."""
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


__all__ = ["ClassProperty", "replace_non_serializable", "assert_by_querying_tasks_until",
           "evaluate_until", "get_current_config_values", "generate_pseudo_id", "get_utc_now",
           "get_utc_now_str", "chunked", "to_epoch", "get_nested"]


def default_args_handler(*args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Flowcept's default: an argparse.Namespace first argument as its
    fields, other positional arguments as arg_0, arg_1, ..., keywords as
    they are; values JSON cannot hold as Flowcept writes them."""
    import argparse
    handled: Dict[str, Any] = {}
    if args and isinstance(args[0], argparse.Namespace):
        handled.update(vars(args[0]))
        args = args[1:]
    for i, a in enumerate(args):
        handled[f"arg_{i}"] = a
    handled.update(kwargs)
    return replace_non_serializable(handled)


__all__.append("default_args_handler")
