"""Flowcept's ``flowcept.commons.flowcept_logger`` import path (flowcept.compat.logger)."""
from flowcept.compat.logger import FlowceptLogger  # noqa: F401

__all__ = ["FlowceptLogger"]
