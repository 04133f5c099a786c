"""`flowcept query`, `flowcept export --format perfetto` and the MCP server (a real MCP
client over stdio and streamable HTTP) give the same answers as the query service."""
import asyncio
import csv
import io
import json
import subprocess
import sys
import urllib.parse

import pytest

from access_support import CLI, clean_env, free_port, get_json, stop, wait_http
from questions import QUESTIONS

pytestmark = pytest.mark.timeout(300)


def cli(*args, timeout=120):
    r = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout, env=clean_env())
    return r


def service_items(base, source, flt, limit=10_000, projection=None):
    url = f"{base}/api/v1/tasks?source={source}&filter={urllib.parse.quote(json.dumps(flt))}&limit={limit}"
    if projection:
        url += f"&projection={projection}"
    status, doc = get_json(url)
    assert status == 200
    return doc["items"]


@pytest.mark.parametrize("flt", QUESTIONS[:8], ids=[json.dumps(x) for x in QUESTIONS[:8]])
def test_query_cli_matches_service(service, run_data, flt):
    want = service_items(service, "run", flt)
    for path in (run_data["runs"], run_data["h5"]):
        r = cli("query", path, "--filter", json.dumps(flt), "--all", "--format", "jsonl")
        assert r.returncode == 0, r.stderr
        got = [json.loads(x) for x in r.stdout.splitlines()]
        assert got == want


def test_query_cli_formats(run_data):
    r = cli("query", run_data["h5"], "-f", '{"status": "ERROR"}', "-p", "task_id,activity_id,used.model",
            "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["task_id", "activity_id", "used.model"]
    assert rows[1][1:] == ["evaluate", "model-b.csv.clean"] and len(rows) == 2
    r = cli("query", run_data["runs"], "--sort=-rank", "-n", "3")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:4] == ["task_id", "activity_id", "status", "rank"]
    assert len(lines) == 4 and all(line.split()[3] == "3" for line in lines[1:])
    assert "3 of 148 shown" in r.stderr
    r = cli("query", run_data["h5"], "-f", '{"rank": {"$bogus": 1}}')
    assert r.returncode == 2 and "unknown operator '$bogus'" in r.stderr
    r = cli("query", run_data["h5"], "-n", "999999")
    assert r.returncode == 2 and "limit must be between" in r.stderr
    r = cli("query", run_data["base"] + "/nothing-here")
    assert r.returncode == 2 and "no such store directory" in r.stderr


def test_perfetto_export_one_track_per_rank_and_thread(run_data, tmp_path):
    out = str(tmp_path / "job.trace.json")
    r = cli("export", "--format", "perfetto", run_data["h5"], "-o", out)
    assert r.returncode == 0, r.stderr
    trace = json.load(open(out))
    ev = trace["traceEvents"]
    spans = [e for e in ev if e["ph"] == "X"]
    assert len(spans) == 148
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(procs.values()) == [f"rank {r} (vm)".replace("vm", spans[0] and procs[1].split("(")[1][:-1])
                                      for r in range(4)]
    threads = {(e["pid"], e["tid"]) for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in spans} == threads
    ranks = {e["pid"]: procs[e["pid"]] for e in spans}
    assert len(ranks) == 4
    err = [e for e in spans if e["cat"] == "ERROR"]
    assert [e["name"] for e in err] == ["evaluate"]
    # a slice shows its inputs (a default included: Flowcept records defaults in used)
    assert err[0]["args"]["used"] == {"model": "model-b.csv.clean", "metric": "auc"}
    train = [e for e in spans if e["name"] == "train"]
    assert train and all(e["args"]["generated"] for e in train)
    assert min(e["ts"] for e in spans) == 0 and all(e["dur"] >= 0 for e in spans)
    gz = str(tmp_path / "job.trace.json.gz")
    assert cli("export", "--format", "perfetto", run_data["runs"], "-o", gz).returncode == 0
    import gzip
    assert len([e for e in json.load(gzip.open(gz))["traceEvents"] if e["ph"] == "X"]) == 148


def test_prov_export_cli(run_data, tmp_path):
    out = str(tmp_path / "p.provn")
    r = cli("export", "--format", "prov-provn", run_data["h5"], "-o", out)
    assert r.returncode == 0, r.stderr
    assert open(out).read().startswith("document")
    xml = str(tmp_path / "p.xml")   # PROV-XML: the prov extra brings prov[xml] (lxml)
    r = cli("export", "--format", "prov-xml", run_data["h5"], "-o", xml)
    assert r.returncode == 0, r.stderr
    from prov.model import ProvDocument
    doc = ProvDocument.deserialize(xml, format="xml")
    assert len(list(doc.get_records())) > 148


async def _mcp_session(run_data, transport):
    from mcp import ClientSession
    if transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client
        params = StdioServerParameters(command=sys.executable, args=["-m", "flowcept.access.cli", "mcp",
                                                                     run_data["runs"], run_data["h5"]],
                                       env=clean_env())
        ctx = stdio_client(params)
    else:
        from mcp.client.streamable_http import streamable_http_client
        ctx = streamable_http_client(transport)
    async with ctx as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = await s.list_tools()
            out = {"tools": sorted(t.name for t in tools.tools), "answers": {}}
            for flt in QUESTIONS[:6]:
                for src in ("runs", "run"):
                    r = await s.call_tool("find_tasks", {"filter": flt, "source": src, "limit": 200})
                    out["answers"][(json.dumps(flt), src)] = json.loads(r.content[0].text)
            r = await s.call_tool("failures", {"source": "run"})
            out["failures"] = json.loads(r.content[0].text)
            tid = out["failures"]["items"][0]["task_id"]
            r = await s.call_tool("lineage", {"task_id": tid, "source": "runs"})
            out["lineage"] = json.loads(r.content[0].text)
            r = await s.call_tool("workflow_summary", {"source": "run"})
            out["summary"] = json.loads(r.content[0].text)
            r = await s.call_tool("statistics", {"by": "rank", "source": "runs"})
            out["stats"] = json.loads(r.content[0].text)
            r = await s.call_tool("get_task", {"task_id": "nonsense", "source": "run"})
            out["bad"] = json.loads(r.content[0].text)
            return out


def _check_mcp(out, service):
    assert out["tools"] == ["failures", "find_tasks", "get_task", "lineage", "statistics", "workflow_summary"]
    for (flt, src), ans in out["answers"].items():
        want = service_items(service, src, json.loads(flt), limit=200)
        assert ans["total"] == len(want), flt
        if ans.get("truncated"):   # cut to fit a model's context: a prefix of the same answer
            assert 0 < len(ans["items"]) < len(want) and ans["items"] == want[:len(ans["items"])], flt
        else:
            assert ans["items"] == want, flt
    assert [d["activity_id"] for d in out["failures"]["items"]] == ["evaluate"]
    assert [d["activity_id"] for d in out["lineage"]["items"]] == ["pipeline", "make", "clean", "train"]
    assert out["summary"]["tasks"] == 148 and out["summary"]["by_status"]["ERROR"] == 1
    assert [r["rank"] for r in out["stats"]["items"]] == [0, 1, 2, 3]
    assert "not a task id" in out["bad"]["error"]


def test_mcp_stdio_real_client(run_data, service):
    out = asyncio.run(asyncio.wait_for(_mcp_session(run_data, "stdio"), 120))
    _check_mcp(out, service)


def test_mcp_http_real_client(run_data, service):
    port = free_port()
    proc = subprocess.Popen(CLI + ["mcp", run_data["runs"], run_data["h5"], "--transport", "http",
                                   "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=clean_env())
    try:
        import socket
        import time
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        out = asyncio.run(asyncio.wait_for(_mcp_session(run_data, f"http://127.0.0.1:{port}/mcp"), 120))
    finally:
        stop(proc)
    _check_mcp(out, service)


def test_top_level_flowcept_cli_has_the_commands(run_data):
    r = subprocess.run([sys.executable, "-m", "flowcept", "query", run_data["h5"], "-f", '{"status": "ERROR"}',
                        "--format", "jsonl"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["activity_id"] for x in r.stdout.splitlines()] == ["evaluate"]
    for cmd in ("serve", "mcp", "ask", "export", "metrics"):
        h = subprocess.run([sys.executable, "-m", "flowcept", cmd, "--help"], capture_output=True, text=True,
                           timeout=60, env=clean_env())
        assert h.returncode == 0 and "usage: flowcept " + cmd in h.stdout


def test_perfetto_slice_args_are_bounded():
    from flowcept.access.perfetto import ARG_CHARS, ARG_KEYS, bounded
    big = {"x": "a" * 1000, **{f"k{i}": i for i in range(30)}}
    b = bounded(big)
    assert len(b) == ARG_KEYS + 1 and b["…"] == f"{len(big) - ARG_KEYS} more"
    assert b["x"].endswith("…") and len(b["x"]) == ARG_CHARS + 1
    assert bounded({"n": 3, "path": "/data/a.csv"}) == {"n": 3, "path": "/data/a.csv"}
