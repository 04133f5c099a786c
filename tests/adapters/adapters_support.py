"""Helpers for the adapter tests: a capture session of the test, and the
records read back from its store after the session ended."""
import os
import subprocess
import sys

import pytest


@pytest.fixture
def session(run_dir):
    from flowcept.capture import session as runtime
    from flowcept.config import load_config
    s = runtime.start_local_session(load_config())
    yield s
    runtime.end_session()


def read_back(run_dir, prefix=None):
    """Ends the session and returns its task records (activity prefix filter)."""
    from flowcept.capture import session as runtime
    from flowcept.query.tasks import read_tasks
    runtime.end_session()
    tasks = read_tasks(run_dir)
    if prefix is not None:
        tasks = [t for t in tasks if str(t["activity_id"]).startswith(prefix)]
    return tasks


def run_py(code, *args, timeout=120, env=None):
    """Runs python code in another process; returns its stdout (raises on failure)."""
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise AssertionError(f"child failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def stored_bodies(run_dir):
    """Every task record under run_dir as the adapter stored it: the decoded
    payload map plus activity, status, ids and times (the fields a Flowcept
    document is made of, before any read-side shaping)."""
    from flowcept.query.tasks import read_records
    from flowcept.record.layout import STATUS_NAMES
    from flowcept.record.payload import decode
    r = read_records(run_dir)
    out = []
    for i in range(len(r)):
        rec = r.records[i]
        body = decode(r.payloads[i]) if r.payloads[i] else {}
        out.append({"activity": r.activity[i], "status": STATUS_NAMES[int(rec["status"])],
                    "workflow": int(rec["workflow_id"]), "task": int(rec["task_id"]),
                    "parent": int(rec["parent_id"]), "start_ns": int(rec["start_ns"]),
                    "end_ns": int(rec["end_ns"]), "body": body})
    return out


def flowcept_yaml(path, **sections):
    """A Flowcept settings file holding only the given sections (the rest
    takes Flowcept's defaults); returns its path."""
    import yaml
    with open(path, "w") as f:
        yaml.safe_dump(sections, f)
    return str(path)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real RabbitMQ broker for the module's tests (installed with apt-get when root)."""
    from support.rabbitmq_server import RabbitServer, ensure_installed
    ok, why = ensure_installed()
    if not ok:
        pytest.skip(why)
    srv = RabbitServer(tmp_path_factory.mktemp("rabbit"))
    try:
        yield srv
    finally:
        srv.stop()
