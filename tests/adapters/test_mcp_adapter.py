"""MCP tool calls captured on a real stdio server and through a wrapped client session."""
import asyncio
import os
import sys

import pytest
from adapters_support import read_back

pytest.importorskip("mcp", reason="mcp not installed: pip install 'flowcept[mcp]'")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


async def _client(env):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from flowcept.adapters.mcp import FlowceptClientSession
    params = StdioServerParameters(command=sys.executable, args=[os.path.join(HERE, "mcp_server_app.py")],
                                   env=env, cwd=ROOT)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as raw:
            await raw.initialize()
            s = FlowceptClientSession(raw, agent_id="driver")
            names = sorted(t.name for t in (await s.list_tools()).tools)
            added = await s.call_tool("add", {"a": 2, "b": 40})
            shouted = await s.call_tool("shout", {"text": "hi"})
            failed = await s.call_tool("fail", {"reason": "no luck"})
            return names, added, shouted, failed


def test_server_and_client_tool_calls(run_dir, session, flowcept_env):
    env = {"FLOWCEPT_RUN_DIR": flowcept_env["run_dir"], "FLOWCEPT_SHM_DIR": flowcept_env["shm_dir"],
           "PYTHONPATH": ROOT}
    names, added, shouted, failed = asyncio.run(asyncio.wait_for(_client(env), 60))
    assert names == ["add", "fail", "shout"]
    err = lambda r: getattr(r, "is_error", None) or getattr(r, "isError", False)   # mcp 2.x / 1.x
    assert added.content[0].text == "42" and not err(added)      # results unchanged
    assert shouted.content[0].text == "HI"
    assert err(failed)
    import time
    deadline = time.monotonic() + 20   # the server process drains its records as it exits
    from flowcept.query.tasks import find_stores
    while time.monotonic() < deadline:
        try:
            if len(find_stores(run_dir)) >= 2:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    time.sleep(0.5)
    tasks = read_back(run_dir)
    server = {t["activity_id"]: t for t in tasks if t.get("custom_metadata", {}).get("side") == "server"}
    client = {t["activity_id"]: t for t in tasks if t.get("custom_metadata", {}).get("side") == "client"}
    assert sorted(server) == ["add", "fail", "shout"]
    assert sorted(client) == ["mcp:add", "mcp:fail", "mcp:shout"]
    assert server["add"]["used"] == {"a": 2, "b": 40} and server["add"]["generated"] == {"result": 42}
    assert server["shout"]["generated"] == {"result": "HI"}
    assert server["fail"]["status"] == "ERROR" and "no luck" in server["fail"]["custom_metadata"]["error"]
    assert server["add"]["custom_metadata"]["prov"] == {"wasAssociatedWith": "calc-agent"}
    tel = server["add"]["custom_metadata"]
    assert tel["telemetry_at_start"]["process"]["pid"] == tel["telemetry_at_end"]["process"]["pid"] != os.getpid()
    assert "telemetry_at_start" not in server["shout"]["custom_metadata"]     # off unless asked
    assert client["mcp:add"]["custom_metadata"]["agent_id"] == "driver"
    assert client["mcp:add"]["used"] == {"a": 2, "b": 40}
    assert client["mcp:add"]["generated"]["is_error"] is False
    assert client["mcp:fail"]["status"] == "ERROR"
    agents = sorted(t["generated"]["agent_id"] for t in tasks if t["activity_id"] == "mcp:agent")
    assert agents == ["calc-agent", "driver"]
    for t in list(server.values()) + list(client.values()):
        assert t["start_ns"] <= t["end_ns"]
