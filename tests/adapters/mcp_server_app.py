"""A real MCP stdio server whose tools are captured (spawned by the test's client)."""
import asyncio

from mcp.server.mcpserver import MCPServer

from flowcept.adapters.mcp import agent_flowcept_task

server = MCPServer("calc")


@server.tool()
@agent_flowcept_task(agent_id="calc-agent", telemetry=True)
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
@agent_flowcept_task(agent_id="calc-agent")
async def shout(text: str) -> str:
    """Upper-cases text."""
    await asyncio.sleep(0)
    return text.upper()


@server.tool()
@agent_flowcept_task(agent_id="calc-agent")
def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


if __name__ == "__main__":
    server.run("stdio")
