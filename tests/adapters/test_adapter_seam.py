"""The adapter seam: registry, configuration keys, start_interceptors, the
observe command, the null template, source-derived ids, telemetry."""
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from adapters_support import read_back

from flowcept import registry
from flowcept.adapters import start_interceptors, stop_interceptors
from flowcept.adapters.base import Adapter, NullAdapter, source_task_id
from flowcept.errors import ConfigError
from flowcept.record.layout import split_task_id


def _db(path, first, n):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, state TEXT)")
    c.executemany("INSERT INTO jobs VALUES (?, ?)", [(i, f"s{i}") for i in range(first, first + n)])
    c.commit()
    c.close()


def test_registry_lists_every_adapter():
    assert {"null", "mlflow", "sqlite", "files", "rabbitmq", "dask"} <= set(registry.names("adapter"))
    assert issubclass(registry.load("adapter", "sqlite"), Adapter)


def test_source_ids_are_stable_and_outside_rank_origins():
    a = source_task_id("mlflow", "run-1")
    assert a == source_task_id("mlflow", "run-1") != source_task_id("mlflow", "run-2")
    assert a != source_task_id("sqlite", "run-1")
    origin, made_in_c, _ = split_task_id(a)
    assert origin >= 0xF00000 and not made_in_c


def test_null_adapter_checkpoints_and_bad_options_fail_clearly(session, tmp_path):
    ck = str(tmp_path / "null.json")
    with NullAdapter(session, checkpoint=ck) as a:
        assert a.poll() == 0
    assert json.load(open(ck))["position"]["passes"] == 2     # one poll + the last one at stop
    b = NullAdapter(session, checkpoint=ck).start()
    assert b.position["passes"] == 2
    b.stop()
    with pytest.raises(ConfigError, match="unknown option"):
        NullAdapter(session, bogus=1)
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        registry.load("adapter", "sqlite")(session, path="x.db", table="t; DROP TABLE t")
    open(ck, "w").write("{not json")
    with pytest.raises(ConfigError, match="remove it"):
        NullAdapter(session, checkpoint=ck).start()


def test_interceptors_from_configuration_keys(run_dir, tmp_path, monkeypatch):
    db = str(tmp_path / "app.db")
    _db(db, 1, 5)
    monkeypatch.setenv("FLOWCEPT_SQLITE_PATH", db)
    monkeypatch.setenv("FLOWCEPT_SQLITE_TABLE", "jobs")
    from flowcept.capture import session as runtime
    from flowcept.config import load_config
    s = runtime.start_local_session(load_config(sqlite_poll_interval=0.02))
    started = start_interceptors(["sqlite"], s)
    _db(db, 6, 3)
    deadline = time.monotonic() + 10
    while started[0].emitted < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop_interceptors(started)
    assert started[0].emitted == 8
    tasks = read_back(run_dir, "sqlite:")
    assert sorted(t["generated"]["state"] for t in tasks) == sorted(f"s{i}" for i in range(1, 9))
    with pytest.raises(ConfigError, match="unknown adapter 'nosuch'"):
        start_interceptors(["nosuch"], s)


def test_observe_command_resumes_without_duplicates(run_dir, tmp_path):
    db = str(tmp_path / "app.db")
    _db(db, 1, 4)
    ck = str(tmp_path / "ck.json")
    cmd = [sys.executable, "-m", "flowcept", "observe", "sqlite", db, "--table", "jobs", "--once",
           "--checkpoint", ck]
    outs = []
    for extra in (0, 3, 0):
        if extra:
            _db(db, 5, extra)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert [o.split(": ")[1].split(" ")[0] for o in outs] == ["4", "3", "0"]
    from flowcept.query.tasks import read_tasks
    tasks = [t for t in read_tasks(run_dir) if t["activity_id"] == "sqlite:jobs"]
    assert sorted(t["custom_metadata"]["rowid"] for t in tasks) == list(range(1, 8))
    p = subprocess.run([sys.executable, "-m", "flowcept", "observe", "files", str(tmp_path / "nope"),
                        "--once"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "is not a directory" in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2
