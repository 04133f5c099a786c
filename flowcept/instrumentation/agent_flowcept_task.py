"""Flowcept's ``agent_flowcept_task``: MCP tool capture (implemented in
flowcept.adapters.mcp)."""
from flowcept.adapters.mcp import agent_flowcept_task  # noqa: F401
