"""MLflow adapter against a real MLflow tracking server (REST) and its
sqlite backend file (read-only)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from adapters_support import read_back, run_py

from flowcept.adapters.mlflow import MlflowAdapter
from flowcept.errors import ConfigError

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'flowcept[test-adapters]'")

CLIENT = r"""
import os, sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("heat")
what = sys.argv[2]
if what == "three":
    for i in range(2):
        with mlflow.start_run(run_name=f"train{i}"):
            mlflow.log_params({"lr": 0.1 * (i + 1), "layers": 3})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1 + i), step=step)
            mlflow.set_tags({"stage": "dev", "idx": str(i)})
            p = os.path.join(sys.argv[3], f"model{i}.txt")
            open(p, "w").write("w" * (10 + i))
            mlflow.log_artifact(p, artifact_path="models")
    try:
        with mlflow.start_run(run_name="broken"):
            mlflow.log_param("lr", 5)
            raise RuntimeError("diverged")
    except RuntimeError:
        pass
    from mlflow.tracking import MlflowClient
    c = MlflowClient()   # not the active run: left RUNNING when this process exits
    r = c.create_run(mlflow.get_experiment_by_name("heat").experiment_id, run_name="long")
    c.log_param(r.info.run_id, "lr", 0.01)
    print(r.info.run_id)
"""


def _rest_end_run(url, run_id):
    import json
    body = json.dumps({"run_id": run_id, "status": "FINISHED",
                       "end_time": int(time.time() * 1000)}).encode()
    req = urllib.request.Request(url + "/api/2.0/mlflow/runs/update", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the mlflow server command is not installed: pip install mlflow==3.17.2")
    port = _free_port()
    d = tmp_path / "mlflow"
    (d / "art").mkdir(parents=True)
    log = open(d / "server.log", "wb")
    p = subprocess.Popen([exe, "server", "--backend-store-uri", f"sqlite:///{d}/mlflow.db",
                          "--default-artifact-root", str(d / "art"), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "1"], stdout=log, stderr=log,
                         start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise AssertionError("mlflow server did not start:\n" +
                                         open(d / "server.log").read()[-2000:])
                time.sleep(0.5)
        yield url, str(d / "mlflow.db"), d
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        log.close()


def test_runs_through_rest_and_sqlite_store_exactly_once(run_dir, session, tmp_path, mlflow_server):
    url, db, d = mlflow_server
    long_id = run_py(CLIENT, url, "three", str(tmp_path), timeout=180).split()[-1]
    ck = str(tmp_path / "mlflow.ckpt")
    a = MlflowAdapter(session, tracking_uri=url, checkpoint=ck).start()
    assert a.poll() == 3                     # the running run waits until it ends
    t0 = time.perf_counter()
    _rest_end_run(url, long_id)   # what MlflowClient.set_terminated sends
    client_s = time.perf_counter() - t0
    assert a.poll() == 1
    a.stop()
    b = MlflowAdapter(session, tracking_uri=url, checkpoint=ck).start()
    assert b.poll() == 0                     # restart: nothing twice
    b.stop()
    # the same store through its sqlite file, read-only, while the server runs
    c = MlflowAdapter(session, tracking_uri=f"sqlite:///{db}", checkpoint=str(tmp_path / "ck2")).start()
    assert c.poll() == 4
    c.stop()
    assert a.errors == b.errors == c.errors == 0
    assert client_s < 10                     # the server answers its clients while observed

    tasks = read_back(run_dir)
    by = {}
    for t in tasks:
        if t["custom_metadata"].get("adapter") == "mlflow":
            by.setdefault(t["custom_metadata"]["run_id"], []).append(t)
    assert len(by) == 4 and all(len(v) == 2 for v in by.values())   # once per adapter source
    for rest, sql in by.values():
        assert rest["task_id"] == sql["task_id"]           # same run id -> same record id
        assert rest["used"] == sql["used"] and rest["generated"] == sql["generated"]
        assert rest["custom_metadata"]["metric_history"] == sql["custom_metadata"]["metric_history"]
    recs = {v[0]["activity_id"]: v[0] for v in by.values()}
    assert sorted(recs) == ["broken", "long", "train0", "train1"]
    t1 = recs["train1"]
    assert t1["status"] == "FINISHED" and recs["broken"]["status"] == "ERROR"
    assert t1["used"] == {"lr": "0.2", "layers": "3"}
    assert t1["generated"] == {"loss": pytest.approx(1.0 / 4)}
    hist = t1["custom_metadata"]["metric_history"]["loss"]
    assert [h[0] for h in hist] == [0, 1, 2] and [h[2] for h in hist] == pytest.approx([0.5, 1 / 3, 0.25])
    assert t1["tags"]["stage"] == "dev" and t1["tags"]["idx"] == "1"
    assert t1["tags"]["mlflow.runName"] == "train1"
    arts = {f["path"]: f for f in t1["custom_metadata"]["artifacts"]}
    assert arts["models"]["is_dir"] and arts["models/model1.txt"]["size"] == 11
    assert t1["custom_metadata"]["experiment"] == "heat"
    assert t1["end_ns"] >= t1["start_ns"] > 0


FLOWCEPT_RUN = r"""
import sys, mlflow
mlflow.set_tracking_uri(f"sqlite:///{sys.argv[1]}")
eid = mlflow.create_experiment(sys.argv[2])
with mlflow.start_run(experiment_id=eid) as run:
    mlflow.log_params({"number_epochs": 10})
    mlflow.log_params({"batch_size": 64})
    mlflow.log_metric("loss", 0.25)
print(run.info.run_id)
"""


def _mlflow_settings(tmp_path, db):
    from adapters_support import flowcept_yaml
    return flowcept_yaml(tmp_path / "settings.yaml", adapters={"mlflow": {
        "kind": "mlflow", "file_path": str(db), "log_params": ["*"], "log_metrics": ["*"],
        "watch_interval_sec": 0.2}})


def test_flowcept_way_watches_the_settings_file_path(run_dir, tmp_path, monkeypatch):
    """Flowcept('mlflow') with adapters.mlflow.file_path: the file does not
    exist yet when it starts; the run is stored as 1.0.3 stores it."""
    from adapters_support import stored_bodies
    from flowcept import Flowcept
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", _mlflow_settings(tmp_path, db))
    with Flowcept("mlflow"):
        run_id = run_py(FLOWCEPT_RUN, db, "LinearRegression").strip().splitlines()[-1]
    (r,) = [r for r in stored_bodies(run_dir) if r["body"].get("task_id") == run_id]
    assert r["status"] == "FINISHED"
    # field by field: Flowcept 1.0.3 stores task_id, used (params, as text), generated (metrics)
    assert r["body"] == {"task_id": run_id, "used": {"number_epochs": "10", "batch_size": "64"},
                         "generated": {"loss": 0.25}}
    assert 0 < r["start_ns"] <= r["end_ns"]
    doc = Flowcept.db.query({"task_id": run_id})[0]
    assert doc["used"] == {"number_epochs": "10", "batch_size": "64"} and doc["status"] == "FINISHED"


def test_flowcept_interceptor_api(run_dir, session, tmp_path, monkeypatch):
    """settings, dao and state_manager, as Flowcept's own tests use them;
    reset() never makes the adapter emit a run twice."""
    from flowcept.adapters.mlflow import MlflowAdapter, RunData
    from flowcept.flowceptor.adapters.mlflow.mlflow_dataclasses import RunData as FlowceptRunData
    from flowcept.flowceptor.adapters.mlflow.mlflow_interceptor import MLFlowInterceptor
    assert FlowceptRunData is RunData and MLFlowInterceptor is MlflowAdapter
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", _mlflow_settings(tmp_path, db))
    a = MlflowAdapter.from_session(session, checkpoint=str(tmp_path / "ck.json")).start()
    assert a.settings.file_path == str(db) and a.poll_interval == 0.2 and a.details is False
    assert a.dao.get_finished_run_uuids() == [] and a.poll() == 0   # no file yet: nothing, no error
    run_id = run_py(FLOWCEPT_RUN, db, "e1").strip().splitlines()[-1]
    assert a.poll() == 1 and a.errors == 0
    assert a.dao.get_finished_run_uuids() == [(run_id,)]
    data = a.dao.get_run_data(run_id)
    assert (data.task_id, data.used, data.generated, data.status) == (
        run_id, {"number_epochs": "10", "batch_size": "64"}, {"loss": 0.25}, "FINISHED")
    assert a.dao.get_run_data("no-such-run") is None
    sm = a.state_manager
    assert sm.has_element_id(run_id) and sm.count() == 1
    sm.reset()
    sm.add_element_id("dummy-value")
    assert not sm.has_element_id(run_id) and sm.has_element_id("dummy-value")
    assert a.poll() == 0                                              # nothing emitted twice
    a.stop()
    with pytest.raises(ConfigError, match="adapters.mlflow.file_path"):
        monkeypatch.delenv("FLOWCEPT_SETTINGS_PATH")
        MlflowAdapter.from_session(session)
