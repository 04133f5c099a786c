"""End to end through a real redis-server: a Redis outage mid-run (spool,
then replay) and an MPI run of examples/heat2d.py at 4 ranks, each with a
keeper process running; every record must land exactly once."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRODUCER = r'''
import sys, time
from flowcept import flowcept_task
from flowcept.capture import session as runtime

@flowcept_task
def work(i, j):
    return i * j

s = runtime.ensure_session()
drainer = s.drainer
open(sys.argv[2], "w").close()          # connected: the test may now pull the plug
deadline = time.monotonic() + float(sys.argv[1])
i = 0
while time.monotonic() < deadline:
    for j in range(50):
        work(i, j)
    i += 1
    time.sleep(0.002)
runtime.end_session()
sp = drainer.spool
print(f"calls={i * 50} spooled={sp.spooled} replayed={sp.replayed} left={len(sp.keys())}", flush=True)
'''


def _keeper(url, store, name):
    return subprocess.Popen([sys.executable, "-m", "flowcept", "keeper", "run", "--url", url,
                             "--store-dir", store, "--name", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.communicate()


def _wait_records(store, want, timeout):
    from flowcept.keeper import read_status
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = read_status(store)["totals"]["records_in"]
        except Exception:
            got = -1
        if got >= want:
            return got
        time.sleep(0.1)
    return got


@pytest.mark.redis
@pytest.mark.slow
def test_redis_killed_and_restarted_mid_run_loses_and_doubles_nothing(tmp_path, run_dir):
    from support.redis_server import RedisServer, redis_available
    if not redis_available()[0]:
        pytest.skip(redis_available()[1])
    from flowcept.query.search import query
    store = str(tmp_path / "store")
    # Redis durability is Redis's: AOF fsync'd per write, so a SIGKILLed Redis keeps what it confirmed
    with RedisServer(tmp_path / "redis", password="pw",
                     extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as srv:
        keeper = _keeper(srv.url, store, "k-outage")
        env = dict(os.environ, FLOWCEPT_TRANSPORT="redis", FLOWCEPT_TRANSPORT_URL=srv.url,
                   FLOWCEPT_SPOOL_RETRY_MS="200", FLOWCEPT_LEADER="thread", FLOWCEPT_BATCH_RECORDS="500")
        script = tmp_path / "producer.py"
        script.write_text(PRODUCER)
        started = tmp_path / "started"
        prod = subprocess.Popen([sys.executable, str(script), "4", str(started)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and prod.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert started.exists(), "producer did not start"
            time.sleep(1.0)
            srv.kill()                      # outage: SIGKILL, no goodbye
            time.sleep(1.5)
            srv.start()                     # back on the same port, same password
            out, err = prod.communicate(timeout=120)
        finally:
            if prod.poll() is None:
                prod.kill()
                prod.wait(timeout=30)
        assert prod.returncode == 0, err
        stats = dict(kv.split("=") for kv in out.split())
        calls = int(stats["calls"])
        assert int(stats["spooled"]) > 0, out          # the outage really hit the spool ...
        assert int(stats["replayed"]) == int(stats["spooled"]) and stats["left"] == "0", out
        got = _wait_records(store, calls, 60)
        kout, kerr = _stop(keeper)
        assert keeper.returncode == 0, kerr
    tasks = query(store, activity="work")
    assert len(tasks) == calls == got, (len(tasks), calls, got)
    assert len({t["task_id"] for t in tasks}) == calls       # nothing twice
    pairs = sorted((t["used"]["i"], t["used"]["j"]) for t in tasks)
    assert pairs == [(i, j) for i in range(calls // 50) for j in range(50)]   # nothing lost


def _mpi_ok():
    if shutil.which("mpiexec") is None:
        return False, "mpiexec not on PATH (pip install mpi4py mpich)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False, "mpi4py not installed"
    from support.redis_server import redis_available
    return redis_available()


@pytest.mark.mpi
@pytest.mark.redis
@pytest.mark.slow
def test_heat2d_4_ranks_through_redis_and_keeper_exactly_once(tmp_path, run_dir):
    ok, why = _mpi_ok()
    if not ok:
        pytest.skip(why)
    from support.redis_server import RedisServer
    from flowcept.query.search import query
    steps, ranks, check_every = 30, 4, 10
    store = str(tmp_path / "store")
    with RedisServer(tmp_path / "redis") as srv:
        keeper = _keeper(srv.url, store, "k-mpi")
        try:
            env = dict(os.environ, FLOWCEPT_TRANSPORT="redis", FLOWCEPT_TRANSPORT_URL=srv.url)
            r = subprocess.run(["mpiexec", "-n", str(ranks), sys.executable,
                                os.path.join(ROOT, "examples", "heat2d.py"), "--steps", str(steps),
                                "--n", "64"], env=env, capture_output=True, text=True, timeout=240)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "heat2d: 4 ranks" in r.stdout
            checks = len([s for s in range(steps) if s % check_every == 0])
            per_rank = {"init_grid": 1, "timestep": steps, "exchange_halos": steps,
                        "diffuse": steps, "residual": checks, "summarize": 1}
            want = ranks * sum(per_rank.values())
            _wait_records(store, want, 60)
        finally:
            _stop(keeper)
        assert keeper.returncode == 0
        assert srv.client().xlen("flowcept") == 0
    tasks = query(store)
    assert len(tasks) == want
    assert len({t["task_id"] for t in tasks}) == want
    counts = {}
    for t in tasks:
        counts[(t["activity_id"], t["rank"])] = counts.get((t["activity_id"], t["rank"]), 0) + 1
    assert counts == {(a, r): n for a, n in per_rank.items() for r in range(ranks)}
    # parents: every exchange/diffuse/residual has a timestep parent on its own rank
    by_id = {t["task_id"]: t for t in tasks}
    for t in tasks:
        if t["activity_id"] in ("exchange_halos", "diffuse", "residual"):
            p = by_id[t["parent_task_id"]]
            assert p["activity_id"] == "timestep" and p["rank"] == t["rank"]
    from flowcept.query.tasks import read_workflows
    (wf,) = read_workflows(store).values()
    assert wf["name"] == "heat2d" and wf["ranks"] == 4
