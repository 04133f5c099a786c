"""`flowcept ask` end to end against a real small local model (SmolLM2-135M through an
OpenAI-compatible HTTP endpoint): the plumbing, not the answer quality -- the model's
tool call is run read-only against the run, its result goes back, an answer comes out,
and the loop's bounds hold."""
import json
import subprocess

import pytest

from access_support import CLI, clean_env

pytestmark = pytest.mark.timeout(600)


def test_ask_runs_the_models_tool_calls(endpoint, run_data):
    r = subprocess.run(CLI + ["ask", "How many tasks failed in this run?", "--run", run_data["h5"],
                              "--base-url", endpoint.base_url, "--model", "smollm2", "--json",
                              "--max-tokens", "24", "--max-steps", "3", "--timeout", "240"],
                       capture_output=True, text=True, timeout=560, env=clean_env())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["calls"], out               # the model asked for a tool, the agent ran it
    names = {"failures", "find_tasks", "get_task", "workflow_summary", "lineage", "statistics"}
    for c in out["calls"]:
        assert c["name"] in names
        res = json.loads(c["result"])      # the real tool's answer over the archive (or its error)
        assert "source" in res or "error" in res
        if c["name"] == "failures":
            assert res["total"] == 1 and res["items"][0]["activity_id"] == "evaluate"
        if c["name"] == "workflow_summary":
            assert res["tasks"] == 148
    assert out["steps"] >= 2 and isinstance(out["answer"], str)
    assert out["stopped"] in ("answer", "max_steps", "max_tool_calls")


def test_agent_loop_bounds_and_plain_output(endpoint, run_data):
    from flowcept.access.agent import ask
    from flowcept.access.core import Access
    from flowcept.access.tools import call_tool
    a = Access([run_data["runs"]])
    ran = []

    def call(name, args):
        ran.append(name)
        return call_tool(a, name, args)
    try:
        res = ask("Summarise the workflow.", call, endpoint.base_url, "smollm2", max_steps=1,
                  max_tokens=16, timeout=240)
    finally:
        a.close()
    assert res.steps == 1 and res.stopped == "max_steps" and len(ran) == 1   # one model call only
    assert "queries run (1):" in res.describe()


def test_unreachable_endpoint_is_a_one_line_error(run_data):
    from access_support import free_port
    r = subprocess.run(CLI + ["ask", "anything", "--run", run_data["h5"], "--base-url",
                              f"http://127.0.0.1:{free_port()}/v1", "--timeout", "5"],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 2 and "cannot reach the chat endpoint" in r.stderr and "--base-url" in r.stderr


def test_slow_endpoint_is_told_apart_from_an_unreachable_one(run_data):
    """A server that accepts the connection and never answers: "up but did not
    answer within N s", not "cannot reach"."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])   # read nothing, answer nothing
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        r = subprocess.run(CLI + ["ask", "anything", "--run", run_data["h5"], "--base-url",
                                  f"http://127.0.0.1:{srv.getsockname()[1]}/v1", "--timeout", "2"],
                           capture_output=True, text=True, timeout=60, env=clean_env())
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()
    assert r.returncode == 2, r.stderr
    assert "is up but did not answer within 2 s (timed out)" in r.stderr and "cannot reach" not in r.stderr
