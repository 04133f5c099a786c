"""Fixtures of the access tests: one real captured run (4-rank MPI heat2d plus the
pipeline app with a failure and data passed between tasks), its LMDB stores and
its HDF5 archive, and a query service started on a free 127.0.0.1 port."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "archive"))

CLI = [sys.executable, "-m", "flowcept.access.cli"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.pop("SLURM_JOB_ID", None)
    env["DUMP_BUFFER"] = "false"     # no Flowcept-style buffer file in the working directory
    env.update(extra)
    return env


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, body bytes) of one real HTTP request."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except urllib.error.URLError as e:
        if data is None or not isinstance(e.reason, (BrokenPipeError, ConnectionResetError)):
            raise
        # the server answered (e.g. 413) and closed before the whole body was sent:
        # send it again without waiting to finish, and read what the server says
        return _early_answer(method, url, data, headers, timeout)


def _early_answer(method, url, data, headers, timeout):
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.putrequest(method, path)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                     **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            for i in range(0, len(data), 65536):
                conn.send(data[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        return r.status, dict(r.headers), r.read()
    finally:
        conn.close()


def get_json(url, **kw):
    status, _h, body = http("GET", url, **kw)
    return status, json.loads(body) if body else None


def wait_http(url, proc, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def run_data(tmp_path_factory):
    """{"base", "runs" (run dir with two jobs' stores), "h5" (their archive), "shm"}."""
    from archive_helpers import run_heat2d
    from flowcept.archive.compact import compact
    base = str(tmp_path_factory.mktemp("access"))
    runs = run_heat2d(base, ranks=4, steps=10)
    env = clean_env(FLOWCEPT_RUN_DIR=runs, FLOWCEPT_SHM_DIR=os.path.join(base, "shm"))
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "archive", "pipeline_app.py")],
                   check=True, timeout=60, env=env, capture_output=True)
    h5 = os.path.join(base, "run.h5")
    compact(runs, h5, progress=False)
    return {"base": base, "runs": runs, "h5": h5, "shm": os.path.join(base, "shm")}


def start_server(args, env=None, timeout=30.0):
    port = free_port()
    proc = subprocess.Popen(CLI + ["serve", *args, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env or clean_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health", proc, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc, base


@pytest.fixture(scope="session")
def service(run_data, tmp_path_factory):
    """A running `flowcept serve` over the store dir ("runs") and the archive ("run")."""
    cache = str(tmp_path_factory.mktemp("cache"))
    proc, base = start_server([run_data["runs"], run_data["h5"], "--cache-dir", cache])
    yield base
    stop(proc)


@pytest.fixture(scope="module")
def endpoint():
    """A real small model (SmolLM2-135M) behind an OpenAI-compatible endpoint on a free port."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
    from llm_endpoint import Endpoint, ensure_shim, model_path
    model, why = model_path()
    if model is None:
        pytest.skip(why)
    shim, why = ensure_shim()
    if shim is None:
        pytest.skip(why)
    ep = Endpoint(shim, model, free_port())
    yield ep
    ep.stop()
