"""Flowcept's ``task_object`` import path (flowcept.compat.objects)."""
from flowcept.compat.objects import TaskObject  # noqa: F401
