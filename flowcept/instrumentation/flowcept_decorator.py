"""Flowcept's ``@flowcept`` workflow decorator: the decorated function runs
as one workflow (``Flowcept(workflow_name=<function name>, ...)``)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional


def flowcept(func: Optional[Callable] = None, **flowcept_kwargs: Any):
    """``@flowcept`` or ``@flowcept(campaign_id=..., workflow_name=...)``."""
    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            from flowcept.flowcept_api.flowcept_controller import Flowcept
            opts = dict(flowcept_kwargs)
            opts.setdefault("workflow_name", f.__name__)
            opts.setdefault("workflow_args", kwargs or None)
            with Flowcept(**opts):
                return f(*args, **kwargs)
        return wrapper
    return decorate(func) if func is not None else decorate


__all__ = ["flowcept"]
