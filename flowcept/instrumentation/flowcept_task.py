"""Flowcept's ``flowcept.instrumentation.flowcept_task`` import path."""
from flowcept.capture.task import (flowcept_task, get_current_context_task_id,  # noqa: F401
                                   lightweight_flowcept_task, telemetry_flowcept_task)
from flowcept.compat.utils import default_args_handler  # noqa: F401

__all__ = ["flowcept_task", "lightweight_flowcept_task", "telemetry_flowcept_task",
           "default_args_handler", "get_current_context_task_id"]
