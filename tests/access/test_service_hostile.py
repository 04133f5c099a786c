"""Hostile input against a real `flowcept serve` (real HTTP, raw sockets where a
client would misbehave) and a real MCP client over stdio: each case is a 4xx or a
tool error, and a normal query is answered within its budget *while* it happens.

Cases: 70 clients sending a request head one byte a second (and slow bodies); a
3 MiB chunked body; a catastrophic-backtracking regex against long names; 3,000
nested brackets; a cursor whose offset decodes to 1e400.  What held before is
kept: no route readable without the token, nothing read outside the served
roots (traversal, NUL, a symlink planted after the start), non-loopback binds
refuse to start without a token, 192 concurrent queries answered."""
import asyncio
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from access_support import CLI, clean_env, free_port, get_json, http as http_req, start_server, stop

pytestmark = pytest.mark.timeout(300)

BUDGET_S = 10.0            # the service's default query budget (--query-timeout)
LONG = "a" * 64            # an activity name long enough for ^(\w+)*!$ to never end by backtracking
EVIL_REGEX = r"^(\w+)*!$"
NESTED = "[" * 3000 + "]" * 3000


def q(x) -> str:
    return urllib.parse.quote(json.dumps(x) if not isinstance(x, str) else x)


@pytest.fixture(scope="module")
def long_names(tmp_path_factory):
    """A run (store) and its archive whose tasks have a 64-character activity name."""
    from flowcept.archive.compact import compact
    base = str(tmp_path_factory.mktemp("hostile"))
    runs = os.path.join(base, "runs")
    script = ("from flowcept import Flowcept, FlowceptTask\n"
              "with Flowcept(workflow_name='hostile'):\n"
              "    for i in range(40):\n"
              f"        with FlowceptTask(activity_id={LONG!r}, used={{'i': i}}):\n"
              "            pass\n"
              "        with FlowceptTask(activity_id='short', used={'i': i}):\n"
              "            pass\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, capture_output=True,
                   env=clean_env(FLOWCEPT_RUN_DIR=runs, FLOWCEPT_SHM_DIR=os.path.join(base, "shm")))
    h5 = os.path.join(base, "long.h5")
    compact(runs, h5, progress=False)
    return {"base": base, "runs": runs, "h5": h5}


@pytest.fixture(scope="module")
def server(long_names):
    proc, base = start_server([long_names["runs"], long_names["h5"]])
    yield base
    stop(proc)


def normal_query(base, source="long"):
    """A normal question, timed: (status, seconds)."""
    t0 = time.monotonic()
    status, doc = get_json(f"{base}/api/v1/tasks?source={source}&limit=5&filter={q({'activity_id': 'short'})}",
                           timeout=BUDGET_S + 20)
    took = time.monotonic() - t0
    assert status == 200 and doc["total"] == 40, doc
    return status, took


class During:
    """Runs normal queries in a thread while the hostile thing happens; every one
    must be answered (200) within the query budget."""

    def __init__(self, base):
        self.base, self.times, self.errors = base, [], []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.times.append(normal_query(self.base)[1])
            except Exception as e:   # noqa: BLE001 - reported by check()
                self.errors.append(repr(e))
            self._stop.wait(0.3)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(BUDGET_S + 30)

    def check(self, at_least=1):
        assert not self.errors, self.errors[:3]
        assert len(self.times) >= at_least and max(self.times) < BUDGET_S, self.times


# -- slow clients --------------------------------------------------------------------------------
def _slow_clients(port, n_head, n_body, seconds):
    """n_head clients send a request head one byte a second; n_body send a whole
    head then a body one byte a second.  Returns per client (closed after s, what
    the server said)."""
    head = (b"GET /api/v1/tasks?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"x" * 64 + b"\r\n\r\n")
    body_head = (b"POST /api/v1/tasks/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n")
    clients = []
    for k in range(n_head + n_body):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        if k >= n_head:
            s.sendall(body_head)
        clients.append({"sock": s, "sent": 0, "closed": None, "got": b"",
                        "trickle": head if k < n_head else b"x" * 200})
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and any(c["closed"] is None for c in clients):
        for c in clients:
            if c["closed"] is not None:
                continue
            try:
                data = c["sock"].recv(4096)
                if data:
                    c["got"] += data
                else:
                    c["closed"] = time.monotonic() - t0
                    continue
            except BlockingIOError:
                pass
            except OSError:
                c["closed"] = time.monotonic() - t0
                continue
            try:
                if c["sent"] < len(c["trickle"]):
                    c["sock"].send(c["trickle"][c["sent"]:c["sent"] + 1])
                    c["sent"] += 1
            except OSError:
                c["closed"] = time.monotonic() - t0
        time.sleep(1.0)
    for c in clients:
        c["sock"].close()
    return clients


def test_slow_heads_and_bodies_do_not_stall_others(server):
    port = int(server.rsplit(":", 1)[1])
    with During(server) as d:
        clients = _slow_clients(port, n_head=70, n_body=6, seconds=35)
    d.check(at_least=10)
    heads, bodies = clients[:70], clients[70:]
    for c in heads:   # cut at the head deadline (10 s; seen here up to a few s later on a loaded machine)
        assert c["closed"] is not None and c["closed"] < 25, c["closed"]
        assert c["got"].startswith(b"HTTP/1.1 408") and b"request head not received" in c["got"], c["got"][:200]
    for c in bodies:
        assert c["closed"] is not None and c["closed"] < 25, c["closed"]
        assert b" 408 " in c["got"] and b"request body not received" in c["got"], c["got"][:300]
    normal_query(server)


def test_chunked_body_over_the_limit_is_413_before_it_is_all_sent(server):
    port = int(server.rsplit(":", 1)[1])
    with During(server) as d:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.putrequest("POST", "/api/v1/tasks/query")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        sent = 0
        for _ in range(18):   # 1.1 MiB of a 3 MiB body, then wait: the server must answer now
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 413 and "over 1048576 bytes" in body["error"], (r.status, body)
        assert sent < 3 << 20
        # all 3 MiB sent in one go: still 413 (the send may break once the server closes)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.putrequest("POST", "/api/v1/tasks/query")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(48):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass
        r = conn.getresponse()
        assert r.status == 413
        conn.close()
    d.check()


# -- hostile queries (the engine's answers, checked over HTTP) ------------------------------------
def _bad_cursor():
    return base64.urlsafe_b64encode(b'{"o": 1e400, "q": "000000000000"}').decode().rstrip("=")


HOSTILE = [
    ("regex", "GET", f"/api/v1/tasks?source={{src}}&filter={q({'activity_id': {'$regex': EVIL_REGEX}})}",
     None, (200, 400)),
    ("regex-post", "POST", "/api/v1/tasks/query",
     {"source": "{src}", "filter": {"activity_id": {"$regex": EVIL_REGEX}}}, (200, 400)),
    ("regex-stats", "GET", f"/api/v1/stats?source={{src}}&filter={q({'activity_id': {'$regex': EVIL_REGEX}})}",
     None, (200, 400)),
    ("nested", "GET", "/api/v1/tasks?source={src}&filter=" + q('{"a": ' + NESTED + "}"), None, (400,)),
    ("nested-and", "GET", "/api/v1/tasks?source={src}&filter="
     + q('{"$and": [' * 1500 + "{}" + "]}" * 1500), None, (400,)),
    ("nested-post", "POST", "/api/v1/tasks/query", '{"source": "{src}", "filter": {"a": ' + NESTED + "}}",
     (400, 422)),
    ("cursor", "GET", "/api/v1/tasks?source={src}&cursor=" + _bad_cursor(), None, (400,)),
]


@pytest.mark.parametrize("src", ["runs", "long"])
@pytest.mark.parametrize("name,method,path,body,codes", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_queries_are_4xx_within_the_budget(server, src, name, method, path, body, codes):
    url = server + path.replace("{src}", src)
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{src}", src))
    elif isinstance(body, str):
        body = body.replace("{src}", src).encode()
    with During(server) as d:
        t0 = time.monotonic()
        status, _h, raw = http_req(method, url, body, timeout=BUDGET_S + 20)
        took = time.monotonic() - t0
    d.check()
    assert status in codes, (status, raw[:300])
    assert took < BUDGET_S + 2, took
    doc = json.loads(raw)
    if status != 200:
        assert isinstance(doc.get("error"), str) and doc["error"], doc
    elif name.startswith("regex"):
        assert doc.get("total", 0) == 0 or all(not r.get("activity", "").endswith("!")
                                               for r in doc.get("items", []))


# -- what held ----------------------------------------------------------------------------------
def test_no_route_without_the_token(long_names, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("t0ken-" + "z" * 20)
    proc, base = start_server([long_names["h5"], "--token-file", str(tok), "--metrics"])
    try:
        auth = {"Authorization": "Bearer " + tok.read_text()}
        doc = get_json(base + "/openapi.json", headers=auth)[1]
        paths = [p.replace("{task_id}", "0000000000000001-0000000000000001") for p in doc["paths"]]
        assert len(paths) >= 13
        for p in paths + ["/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css", "/nothing"]:
            status, body = get_json(base + p)
            if p == "/health":
                assert status == 200
                continue
            assert status == 401 and "bearer" in body["error"], (p, status, body)
            status, body = get_json(base + p, headers={"Authorization": "Bearer nope"})
            assert status == 401, p
        status, _h, _b = http_req("POST", base + "/api/v1/tasks/query", {"filter": {}})
        assert status == 401
        assert get_json(base + "/api/v1/tasks?limit=1", headers=auth)[0] == 200
    finally:
        stop(proc)


def test_nothing_outside_the_served_roots(long_names, tmp_path):
    import shutil
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(long_names["h5"], served / "job.h5")
    outside = tmp_path / "outside.h5"
    shutil.copy(long_names["h5"], outside)
    proc, base = start_server([str(served)])
    try:
        os.symlink(outside, served / "planted.h5")           # planted after the start
        os.symlink("/etc/passwd", served / "passwd.h5")
        for src, code in (("planted", 404), ("passwd", 404), ("..%2Foutside", 400), ("job%00", 400),
                          ("%2Fetc%2Fpasswd", 400), ("job%2F..%2F..%2Fetc", 400)):
            status, doc = get_json(f"{base}/api/v1/tasks?source={src}")
            assert status == code and "error" in doc, (src, status, doc)
        status, doc = get_json(f"{base}/api/v1/tasks/..%2F..%2Fetc%2Fpasswd?source=job")
        assert status in (400, 404) and "error" in doc
        status, doc = get_json(f"{base}/api/v1/tasks/0000000000000001-00000000000000%0001?source=job")
        assert status in (400, 404) and "error" in doc
        assert get_json(f"{base}/api/v1/sources")[1]["items"][0]["name"] == "job"
    finally:
        stop(proc)


def test_non_loopback_bind_needs_a_token(long_names):
    r = subprocess.run(CLI + ["serve", long_names["h5"], "--host", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    err = [x for x in r.stderr.splitlines() if "error" in x]
    assert r.returncode == 2 and len(err) == 1 and "--token-file" in err[0], r.stderr
    assert r.stderr.strip() == err[0], r.stderr        # refused before it says it serves


def test_192_concurrent_queries_are_answered(server):
    results = []
    lock = threading.Lock()

    def one(k):
        src = "runs" if k % 2 else "long"
        try:
            status, doc = get_json(f"{server}/api/v1/tasks?source={src}&limit=3&filter={q({'i': 1})}",
                                   timeout=120)
            ok = status == 200
        except Exception as e:   # noqa: BLE001
            ok, status = False, repr(e)
        with lock:
            results.append((ok, status))
    threads = [threading.Thread(target=one, args=(k,)) for k in range(192)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(results) == 192 and all(ok for ok, _s in results), [s for ok, s in results if not ok][:5]


# -- MCP -----------------------------------------------------------------------------------------
def _is_error(result) -> bool:
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))   # mcp 2.x / 1.x


async def _mcp_hostile(paths):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "flowcept.access.cli", "mcp", *paths], env=clean_env())
    out = {}
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            init = await s.initialize()
            info = getattr(init, "server_info", None) or init.serverInfo
            out["server"] = (info.name, info.version)
            normal = {"filter": {"activity_id": "short"}, "source": "long", "limit": 5}

            async def timed(args):
                t0 = time.monotonic()
                r = await asyncio.wait_for(s.call_tool("find_tasks", args), BUDGET_S + 20)
                return time.monotonic() - t0, r

            cases = {"regex": {"filter": {"activity_id": {"$regex": EVIL_REGEX}}, "source": "long"},
                     "regex-store": {"filter": {"activity_id": {"$regex": EVIL_REGEX}}, "source": "runs"},
                     "cursor": {"cursor": _bad_cursor(), "source": "long"},
                     "projection": {"projection": "task_id,activity_id", "source": "long", "limit": 2}}
            for name, args in cases.items():
                # the hostile call and a normal one at once: the normal one is not held up
                (t_bad, bad), (t_ok, ok) = await asyncio.gather(timed(args), timed(normal))
                out[name] = (t_bad, _is_error(bad), bad.content[0].text, t_ok, json.loads(ok.content[0].text))
            out["after"] = json.loads((await s.call_tool("find_tasks", normal)).content[0].text)
    return out


def test_mcp_hostile_calls_are_tool_errors_and_stall_nothing(long_names):
    from flowcept import __version__
    out = asyncio.run(asyncio.wait_for(_mcp_hostile([long_names["runs"], long_names["h5"]]), 240))
    assert out["server"] == ("flowcept", __version__)
    for name in ("regex", "regex-store", "cursor"):
        t_bad, is_error, text, t_ok, ok = out[name]
        assert t_bad < BUDGET_S + 2 and t_ok < BUDGET_S, (name, t_bad, t_ok)
        assert ok["total"] == 40, (name, ok)
        if name == "cursor":
            assert "cursor" in json.loads(text)["error"], text
        else:   # a linear-time engine answers (no match), or refuses the pattern with a message
            doc = json.loads(text)
            assert "error" in doc or doc["total"] == 0, text
    proj = out["projection"][4]
    assert out["projection"][1] is False
    assert out["after"]["total"] == 40
    items = json.loads(out["projection"][2])["items"]
    assert items and all(set(d) == {"task_id", "activity_id"} for d in items), items
    assert proj["total"] == 40


def _raw_mcp(proc, message: str, want_id=None, timeout=BUDGET_S + 20):
    """Writes one JSON-RPC line to a stdio MCP server and reads until the answer
    with ``want_id`` (the mcp client refuses to serialise 3,000 nested levels, so
    this case is sent as raw protocol text)."""
    proc.stdin.write(message.encode() + b"\n")
    proc.stdin.flush()
    if want_id is None:
        return None
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("the MCP server closed its output")
        try:
            doc = json.loads(line)
        except RecursionError:
            continue
        if doc.get("id") == want_id:
            return time.monotonic() - t0, doc
    raise AssertionError(f"no answer to {want_id} within {timeout}s")


def test_mcp_nested_brackets_raw_protocol(long_names):
    import mcp.types
    proc = subprocess.Popen([sys.executable, "-m", "flowcept.access.cli", "mcp", long_names["runs"],
                             long_names["h5"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=clean_env())
    try:
        _raw_mcp(proc, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": mcp.types.LATEST_PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "hostile-test", "version": "0"}}}), want_id=1)
        _raw_mcp(proc, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        call = ('{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "find_tasks", '
                '"arguments": {"source": "long", "filter": {"a": ' + NESTED + '}}}}')
        _raw_mcp(proc, call)
        # the SDK's own JSON-RPC parser refuses the line (its depth limit) and drops it without an
        # answer; the server must go on: the next call is answered within the budget
        took, doc = _raw_mcp(proc, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "find_tasks", "arguments": {"source": "long", "filter": {"activity_id": "short"}}}}),
            want_id=3)
        assert took < BUDGET_S, took
        assert json.loads(doc["result"]["content"][0]["text"])["total"] == 40
    finally:
        proc.stdin.close()
        stop(proc)
