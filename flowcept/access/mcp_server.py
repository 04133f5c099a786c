"""``flowcept mcp``: the query tools over the Model Context Protocol, so any
MCP-capable assistant can answer questions about a run.

Transports: ``stdio`` (the assistant spawns ``flowcept mcp RUN``) and
``http`` (streamable HTTP at ``http://HOST:PORT/mcp``, 127.0.0.1 by default).
Tools (read-only, answers capped; see flowcept.access.tools): find_tasks,
get_task, workflow_summary, lineage, statistics, failures.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

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


INSTRUCTIONS = ("Read-only provenance of captured workflow runs. Start with workflow_summary, then "
                "find_tasks / failures.")
MAX_RUNNING = 4   # tool calls answered at once; the others wait their turn


def build_server(access, host: str = "127.0.0.1", port: int = 8009):
    """The MCP server with the tools of flowcept.access.tools.  Tools run in
    worker threads (at most MAX_RUNNING at once) under the query budget, so a
    slow call never holds the protocol loop: other calls, pings and
    cancellations are still answered."""
    import anyio
    from flowcept import __version__
    cls = _server_class()
    kw = dict(instructions=INSTRUCTIONS)
    try:
        server = cls("flowcept", version=__version__, **kw)        # 2.x
    except TypeError:                                               # 1.x: host/port here
        server = cls("flowcept", host=host, port=port, **kw)
        low = getattr(server, "_mcp_server", None)
        if low is not None:   # what the server reports as serverInfo.version
            low.version = __version__
    limiter = anyio.CapacityLimiter(MAX_RUNNING)

    async def call(name: str, args: Dict[str, Any]) -> str:
        return await anyio.to_thread.run_sync(call_tool, access, name, args, limiter=limiter)

    def doc(name):
        return BY_NAME[name]["description"]

    @server.tool(description=doc("find_tasks"))
    async def find_tasks(filter: Optional[Dict[str, Any]] = None,
                         projection: Optional[Union[str, List[str]]] = None,
                         sort: Optional[str] = None, limit: Optional[int] = None,
                         cursor: Optional[str] = None, source: Optional[str] = None) -> str:
        return await call("find_tasks", dict(filter=filter, projection=projection, sort=sort, limit=limit,
                                             cursor=cursor, source=source))

    @server.tool(description=doc("get_task"))
    async def get_task(task_id: str, source: Optional[str] = None) -> str:
        return await call("get_task", dict(task_id=task_id, source=source))

    @server.tool(description=doc("workflow_summary"))
    async def workflow_summary(workflow_id: Optional[str] = None, source: Optional[str] = None) -> str:
        return await call("workflow_summary", dict(workflow_id=workflow_id, source=source))

    @server.tool(description=doc("lineage"))
    async def lineage(task_id: str, direction: str = "ancestors", source: Optional[str] = None) -> str:
        return await call("lineage", dict(task_id=task_id, direction=direction, source=source))

    @server.tool(description=doc("statistics"))
    async def statistics(by: str = "activity", filter: Optional[Dict[str, Any]] = None,
                         source: Optional[str] = None) -> str:
        return await call("statistics", dict(by=by, filter=filter, source=source))

    @server.tool(description=doc("failures"))
    async def failures(filter: Optional[Dict[str, Any]] = None, limit: Optional[int] = None,
                       source: Optional[str] = None) -> str:
        return await call("failures", dict(filter=filter, limit=limit, source=source))

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
