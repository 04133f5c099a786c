"""Flowcept's ``flowcept.instrumentation.task_capture`` import path."""
from flowcept.capture.task import FlowceptTask  # noqa: F401

__all__ = ["FlowceptTask"]
