"""Flowcept's ``agent_object`` import path (flowcept.compat.objects)."""
from flowcept.compat.objects import AgentObject  # noqa: F401
