"""Flowcept's ``flowcept.instrumentation.flowcept_decorator`` import path."""
from flowcept.compat.controller import flowcept  # noqa: F401

__all__ = ["flowcept"]
