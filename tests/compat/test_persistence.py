"""Flowcept's online deployment with the engine underneath: records go
through a real redis-server; ``Flowcept(start_persistence=True)`` and
``Flowcept.start_consumption_services()`` store them with the project's
keeper, in this process, into the database Flowcept's settings name (LMDB
at ``databases.lmdb.path``, MongoDB at its host and port, a custom
``BaseConsumer``); a query right after ``stop()`` sees every record, once."""
import os

import pytest

pytest.importorskip("yaml", reason="Flowcept's settings are YAML (PyYAML)")

from flowcept import Flowcept, FlowceptTask, flowcept_task  # noqa: E402
from flowcept.flowceptor.consumers import BaseConsumer  # noqa: E402

ONLINE = """
project:
  db_flush_mode: online
  dump_buffer:
    enabled: false
log:
  log_stream_level: error
mq:
  enabled: true
  type: redis
  host: 127.0.0.1
  port: {redis}
kv_db:
  enabled: true
  host: 127.0.0.1
  port: {redis}
databases:
  lmdb:
    enabled: {lmdb}
    path: {lmdb_path}
  mongodb:
    enabled: {mongo}
    host: 127.0.0.1
    port: {mongo_port}
    db: {mongo_db}
"""


@pytest.fixture
def online(tmp_path, monkeypatch, redis_server):
    def settings(lmdb=True, mongo=False, mongo_port=27017, mongo_db="flowcept"):
        path = tmp_path / "settings.yaml"
        path.write_text(ONLINE.format(redis=redis_server.port, lmdb=str(lmdb).lower(),
                                      lmdb_path=tmp_path / "flowcept_lmdb",
                                      mongo=str(mongo).lower(), mongo_port=mongo_port,
                                      mongo_db=mongo_db))
        monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", str(path))
        return tmp_path
    return settings


@flowcept_task
def square(x):
    return x * x


def _stream_len(redis_server):
    return redis_server.client().xlen("flowcept")


def test_start_persistence_stores_everything_before_stop_returns(online, redis_server):
    where = online()
    with Flowcept(workflow_name="online") as fc:
        for i in range(200):
            square(i)
        with FlowceptTask(activity_id="block", used={"n": 1}):
            pass
        assert fc._persistence is not None and fc._persistence.running
    assert fc._persistence is None   # stopped and flushed
    tasks = Flowcept.db.get_tasks_from_current_workflow()
    assert len(tasks) == 201 and len({t["task_id"] for t in tasks}) == 201   # each once
    assert sorted(t["used"]["x"] for t in tasks if t["activity_id"] == "square") == list(range(200))
    (wf,) = Flowcept.db.workflow_query({"workflow_id": Flowcept.current_workflow_id})
    assert wf["name"] == "online" and wf["status"] == "FINISHED"
    assert os.path.isfile(where / "flowcept_lmdb" / "store.json")   # databases.lmdb.path
    assert _stream_len(redis_server) == 0   # acknowledged and deleted after commit


def test_queries_inside_the_run_and_persistence_off(online, redis_server):
    online()
    with Flowcept():
        square(3)
        assert [t["used"] for t in Flowcept.db.get_tasks_from_current_workflow()] == [{"x": 3}]
    with Flowcept(start_persistence=False):
        square(4)
        buffered = [m for m in Flowcept.buffer if m.get("type") == "task"]
        assert [m["used"] for m in buffered] == [{"x": 4}]   # the local copy: Flowcept's buffer
    assert Flowcept.db.get_tasks_from_current_workflow() == []   # at the MQ, not stored
    assert _stream_len(redis_server) > 0
    Flowcept.start_consumption_services()   # a consumer of this process stores them
    with Flowcept(start_persistence=False):
        pass   # its stop() stops the consumer, after it caught up
    assert [t["used"] for t in Flowcept.db.task_query({"activity_id": "square"})] == \
        [{"x": 3}, {"x": 4}]
    assert _stream_len(redis_server) == 0


class Collect(BaseConsumer):
    def __init__(self):
        super().__init__()
        self.messages = []

    def message_handler(self, msg_obj):
        self.messages.append(msg_obj)
        return True


def test_custom_base_consumer_gets_flowcept_messages(online, redis_server):
    online()
    with Flowcept(workflow_name="w", start_persistence=False):
        square(5)
    consumer = Collect()
    Flowcept.start_consumption_services(consumers=[consumer])
    with Flowcept(start_persistence=False):
        square(6)
    types = [(m["type"], m.get("activity_id")) for m in consumer.messages]
    assert types.count(("task", "square")) == 2 and ("workflow", None) in types
    assert sorted(m["used"]["x"] for m in consumer.messages if m["type"] == "task") == [5, 6]
    # the database got them too
    assert len(Flowcept.db.task_query({"activity_id": "square"})) == 2


def test_mongodb_host_port_and_database_from_the_settings(online, redis_server, mongo_server):
    online(lmdb=False, mongo=True, mongo_port=mongo_server.port, mongo_db="prov_db")
    with Flowcept(workflow_name="m"):
        for i in range(5):
            square(i)
    db = mongo_server.client()["prov_db"]
    assert db["tasks"].count_documents({"activity_id": "square"}) == 5   # the settings' server
    tasks = Flowcept.db.get_tasks_from_current_workflow()
    assert sorted(t["used"]["x"] for t in tasks) == list(range(5))
    from flowcept.commons.daos.docdb_dao.docdb_dao_base import DocumentDBDAO
    from flowcept.commons.daos.docdb_dao.mongodb_dao import MongoDBDAO
    dao = DocumentDBDAO.get_instance(create_indices=False)
    assert isinstance(dao, MongoDBDAO)
    n = dao.count_tasks()
    dao.insert_and_update_many_tasks([{"task_id": "t-1", "myid": "k", "status": "SUBMITTED"},
                                      {"task_id": "t-2", "myid": "k"}], "myid")
    dao.insert_and_update_many_tasks([{"task_id": "t-1", "myid": "k", "status": "FINISHED"}],
                                     "myid")
    assert dao.count_tasks() == n + 2
    assert db["tasks"].find_one({"task_id": "t-1"})["status"] == "FINISHED"
    dao.delete_task_keys("myid", ["k"])
    assert dao.count_tasks() == n
    dao.close()


def test_consumption_services_from_the_command_line(online, redis_server, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    where = online()
    with Flowcept(workflow_name="cli", start_persistence=False):
        for i in range(3):
            square(i)
    wf = Flowcept.current_workflow_id
    proc = subprocess.Popen([sys.executable, "-m", "flowcept", "compat",
                             "--start-consumption-services"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _stream_len(redis_server) and time.monotonic() < deadline:
            time.sleep(0.2)   # the keeper acknowledges (and deletes) after commit
        assert _stream_len(redis_server) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert os.path.isfile(where / "flowcept_lmdb" / "store.json")
    assert len(Flowcept.db.task_query({"workflow_id": wf})) == 3
