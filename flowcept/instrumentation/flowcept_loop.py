"""Flowcept's ``flowcept.instrumentation.flowcept_loop`` import path."""
from flowcept.capture.task import FlowceptLightweightLoop, FlowceptLoop  # noqa: F401

__all__ = ["FlowceptLoop", "FlowceptLightweightLoop"]
