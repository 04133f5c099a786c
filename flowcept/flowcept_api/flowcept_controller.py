"""Flowcept's ``flowcept.flowcept_api.flowcept_controller`` import path."""
from flowcept.compat.controller import Flowcept  # noqa: F401

__all__ = ["Flowcept"]
