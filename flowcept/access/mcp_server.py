"""``flowcept mcp``: the query tools over the Model Context Protocol, so any
MCP-capable assistant can answer questions about a run.

Transports: ``stdio`` (the assistant spawns ``flowcept mcp RUN``) and
``http`` (streamable HTTP at ``http://HOST:PORT/mcp``, 127.0.0.1 by default).
Tools (read-only, answers capped; see flowcept.access.tools): find_tasks,
get_task, workflow_summary, lineage, statistics, failures.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from flowcept.access.tools import BY_NAME, call_tool


def _server_class():
    try:
        from mcp.server.mcpserver import MCPServer   # mcp 2.x
        return MCPServer
    except ImportError:
        pass
    try:
        from mcp.server.fastmcp import FastMCP        # mcp 1.x
        return FastMCP
    except ImportError:
        raise ImportError("flowcept mcp needs the MCP SDK: pip install 'flowcept[mcp]'") from None


def build_server(access, host: str = "127.0.0.1", port: int = 8009):
    cls = _server_class()
    try:
        server = cls("flowcept", instructions="Read-only provenance of captured workflow runs. Start "
                                              "with workflow_summary, then find_tasks / failures.",
                     host=host, port=port)
    except TypeError:   # 2.x takes host/port at run()
        server = cls("flowcept", instructions="Read-only provenance of captured workflow runs. Start "
                                              "with workflow_summary, then find_tasks / failures.")

    def doc(name):
        return BY_NAME[name]["description"]

    @server.tool(description=doc("find_tasks"))
    def find_tasks(filter: Optional[Dict[str, Any]] = None, projection: Optional[List[str]] = None,
                   sort: Optional[str] = None, limit: Optional[int] = None,
                   source: Optional[str] = None) -> str:
        return call_tool(access, "find_tasks", dict(filter=filter, projection=projection, sort=sort,
                                                    limit=limit, source=source))

    @server.tool(description=doc("get_task"))
    def get_task(task_id: str, source: Optional[str] = None) -> str:
        return call_tool(access, "get_task", dict(task_id=task_id, source=source))

    @server.tool(description=doc("workflow_summary"))
    def workflow_summary(workflow_id: Optional[str] = None, source: Optional[str] = None) -> str:
        return call_tool(access, "workflow_summary", dict(workflow_id=workflow_id, source=source))

    @server.tool(description=doc("lineage"))
    def lineage(task_id: str, direction: str = "ancestors", source: Optional[str] = None) -> str:
        return call_tool(access, "lineage", dict(task_id=task_id, direction=direction, source=source))

    @server.tool(description=doc("statistics"))
    def statistics(by: str = "activity", filter: Optional[Dict[str, Any]] = None,
                   source: Optional[str] = None) -> str:
        return call_tool(access, "statistics", dict(by=by, filter=filter, source=source))

    @server.tool(description=doc("failures"))
    def failures(filter: Optional[Dict[str, Any]] = None, limit: Optional[int] = None,
                 source: Optional[str] = None) -> str:
        return call_tool(access, "failures", dict(filter=filter, limit=limit, source=source))

    return server


def run(access, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8009) -> None:
    if transport == "http":
        from flowcept.access.service import is_loopback
        if not is_loopback(host):
            raise ValueError(f"flowcept mcp over HTTP binds loopback only (got {host}); put an "
                             "authenticating proxy in front to reach it from elsewhere")
    server = build_server(access, host, port)
    if transport == "stdio":
        server.run("stdio")
        return
    try:
        server.run("streamable-http", host=host, port=port)
    except TypeError:   # 1.x: host/port were given to the constructor
        server.run("streamable-http")
