"""Flowcept's task decorators over ours.

``@flowcept_task`` with Flowcept's options: ``output_names`` (a string or a
list), ``tags``, ``custom_metadata``, ``subtype``, ``agent_id`` and
``activity_id`` keep our compiled capture (the options are decided when the
function is decorated, nothing changes per call); ``args_handler`` and
``capture_telemetry`` (or telemetry on in Flowcept's settings) need Python
per call and use the wrapper here.  ``generated`` reads as Flowcept names
it: a returned dict as it is, else by ``output_names``, else ``arg_0``.
"""
from __future__ import annotations

import argparse
import functools
import inspect
from time import time_ns
from typing import Any, Callable, Dict, Optional

from flowcept.capture import task as _ours
from flowcept.capture.task import current_parent, current_task_id
from flowcept.instrumentation import _capture as C
from flowcept.record.layout import STATUS_ERROR, STATUS_FINISHED



def default_args_handler(*args, **kwargs) -> Dict[str, Any]:
    """Flowcept's default: an argparse.Namespace first argument as its
    fields, other positional arguments as arg_0, arg_1, ..., keywords as
    they are; values JSON cannot hold become their object-id strings."""
    handled: Dict[str, Any] = {}
    if args:
        if isinstance(args[0], argparse.Namespace):
            handled.update(vars(args[0]))
            args = args[1:]
        for i, a in enumerate(args):
            handled[f"arg_{i}"] = a
    handled.update(kwargs)
    return C.sanitize(handled)


def _names(output_names):
    if output_names is None:
        return None
    if isinstance(output_names, str):
        return [output_names]
    return list(output_names)


def flowcept_task(func: Optional[Callable] = None, **options: Any):
    """Flowcept's ``@flowcept_task`` / ``@flowcept_task(...)``."""
    if func is None:
        return functools.partial(flowcept_task, **options)
    output_names = _names(options.get("output_names"))
    handler = options.get("args_handler")
    telemetry = options.get("capture_telemetry")
    if telemetry is None:
        telemetry = C.telemetry_on()
    common = dict(activity_id=options.get("activity_id"), tags=options.get("tags"),
                  custom_metadata=options.get("custom_metadata"), subtype=options.get("subtype"),
                  agent_id=options.get("agent_id"))
    if handler is None and not telemetry:
        return _ours.flowcept_task(func, output_names=output_names,
                                   capture_args=options.get("capture_args"), **common)
    return _python_task(func, output_names=output_names, args_handler=handler or default_args_handler,
                        telemetry=bool(telemetry), **common)


def lightweight_flowcept_task(func: Optional[Callable] = None, **options: Any):
    """Flowcept's lightweight decorator: here the compiled capture is the light one."""
    if func is None:
        return functools.partial(lightweight_flowcept_task, **options)
    return _ours.flowcept_task(func)


def telemetry_flowcept_task(func: Optional[Callable] = None, **options: Any):
    """A task with telemetry_at_start/telemetry_at_end (psutil)."""
    if func is None:
        return functools.partial(telemetry_flowcept_task, **options)
    return flowcept_task(func, capture_telemetry=True, **options)


def _python_task(func, *, output_names, args_handler, telemetry, activity_id, tags,
                 custom_metadata, subtype, agent_id):
    activity = activity_id or func.__name__
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        sig = None
    const: Dict[str, Any] = {"type": "task"}
    if tags:
        const["tags"] = list(tags)
    if custom_metadata:
        const["custom_metadata"] = C.sanitize(dict(custom_metadata))
    if subtype:
        const["subtype"] = subtype
    if agent_id:
        const["agent_id"] = agent_id

    def used_of(args, kwargs):
        try:
            if sig is None:
                raise TypeError
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return args_handler(**dict(bound.arguments))
        except Exception:
            try:
                return args_handler(*args, **kwargs)
            except Exception as e:
                return {"args_handler_error": str(e)[:200]}

    def generated_of(result):
        if result is None:
            return None
        try:
            if isinstance(result, dict):
                return args_handler(**result)
            if output_names:
                if isinstance(result, (tuple, list)) and len(result) == len(output_names):
                    return args_handler(**dict(zip(output_names, result)))
                if len(output_names) == 1:
                    return args_handler(**{output_names[0]: result})
            return args_handler(result)
        except Exception:
            return {"arg_0": result}

    def record(s, tid, parent, start, tel_start, args, kwargs, result, exc):
        try:
            body = dict(const)
            used = used_of(args, kwargs)
            body["used"] = used
            if exc is None:
                gen = generated_of(result)
                if gen is not None:
                    body["generated"] = gen
            else:
                body["stderr"] = str(exc)[:1000]
                body["error"] = _ours._error_doc(exc)
            if telemetry:
                body["telemetry_at_start"] = tel_start
                body["telemetry_at_end"] = C.telemetry()
            from flowcept.record.payload import encode
            s.push(tid, parent, start, time_ns(), activity,
                   STATUS_FINISHED if exc is None else STATUS_ERROR, encode(body))
        except Exception:   # provenance never changes the function's outcome
            import logging
            logging.getLogger("flowcept").exception("flowcept: could not record %s", activity)

    def begin():
        s = C.session()
        if s is None:
            return None
        parent = current_parent()
        tid = s.next_task_id()
        token = current_task_id.set(tid)
        return s, tid, parent, token, (C.telemetry() if telemetry else None), time_ns()

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args, **kwargs):
            st = begin()
            if st is None:
                return await func(*args, **kwargs)
            s, tid, parent, token, tel, start = st
            try:
                result = await func(*args, **kwargs)
            except BaseException as e:
                current_task_id.reset(token)
                record(s, tid, parent, start, tel, args, kwargs, None, e)
                raise
            current_task_id.reset(token)
            record(s, tid, parent, start, tel, args, kwargs, result, None)
            return result
        async_wrapper.__flowcept_activity__ = activity
        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        st = begin()
        if st is None:
            return func(*args, **kwargs)
        s, tid, parent, token, tel, start = st
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            current_task_id.reset(token)
            record(s, tid, parent, start, tel, args, kwargs, None, e)
            raise
        current_task_id.reset(token)
        record(s, tid, parent, start, tel, args, kwargs, result, None)
        return result

    wrapper.__flowcept_activity__ = activity
    return wrapper


def get_current_context_task_id() -> Optional[str]:
    """The current task's id in our string form (None outside a task)."""
    from flowcept.record.layout import format_task_id
    tid = current_parent()
    s = C.runtime.current()
    if not tid or s is None:
        return None
    return format_task_id(s.workflow_id, tid)


__all__ = ["flowcept_task", "lightweight_flowcept_task", "telemetry_flowcept_task",
           "default_args_handler", "get_current_context_task_id"]
