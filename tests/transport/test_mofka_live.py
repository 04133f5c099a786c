"""The Mofka transport and source against the real libraries: a source-built Mofka 0.8.2 /
diaspora-stream-api 0.5.2 (scripts/mochi.sh), a Mofka server (bedrock, na+sm) started here,
and diaspora-stream-api's "simple" backend.

The client libraries are found through LD_LIBRARY_PATH, which must be set when a process
starts, so the Mofka-using code runs in subprocesses with the prefix's environment; each prints
one JSON line that the test checks.  Skipped, with the reason, only where the stack cannot be
built."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from support.mofka_server import MofkaServer, mochi_env, mochi_prefix, run_py

pytestmark = pytest.mark.timeout(600)
SIMPLE = "simple:libdiaspora-simple-backend.so"


@pytest.fixture(scope="module")
def mochi():
    prefix, reason = mochi_prefix()
    if prefix is None:
        pytest.skip(reason)
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    return prefix, mochi_env(prefix, base)


@pytest.fixture
def server(mochi, tmp_path):
    prefix, env = mochi
    srv = MofkaServer(tmp_path / "mofka", prefix, env)
    yield srv
    srv.stop()


# A config carrying only what the transport and source read (mofka_* options), so these
# tests do not depend on how the package's Config declares backend options.
PRELUDE = textwrap.dedent('''
    import json, os, sys, time, types
    from flowcept.transport import JobInfo, TransportUnavailable
    from flowcept.transport import mofka as M
    from support.framegen import frame_key, make_frame

    def cfg(**kw):
        base = dict(mofka_group_file=os.environ.get("T_GROUP", ""), mofka_topic=os.environ["T_TOPIC"],
                    mofka_protocol="", mofka_driver=os.environ.get("T_DRIVER", "mofka"),
                    mofka_create_topic=True, mofka_timeout_s=float(os.environ.get("T_TIMEOUT", "20")))
        base.update(kw)
        return types.SimpleNamespace(**base)

    JOB = JobInfo(job_name="live", job_id=5, node="nodeL", run_dir="/nonexistent")

    def frames(n, first=0, job_id=5):
        return [make_frame(s, 3, job_id=job_id)[0] for s in range(first, first + n)]

    def read_all(src, want, limit_s=20.0, count=16):
        got, deadline = [], time.monotonic() + limit_s
        while len(got) < want and time.monotonic() < deadline:
            got.extend(src.read(count, 200))
        return got

    def out(**kw):
        print("RESULT " + json.dumps(kw), flush=True)
''')


def _run(env, body, timeout=180, **extra):
    e = dict(env, **{k: str(v) for k, v in extra.items()})
    proc = run_py(PRELUDE + textwrap.dedent(body), e, timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"rc={proc.returncode}\nstdout:{proc.stdout[-3000:]}\nstderr:{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):]), proc


def test_real_client_signatures_match_the_code(mochi):
    """What the module assumes about the bindings, read off the built library."""
    _, env = mochi
    res, _ = _run(env, '''
        import inspect
        import diaspora_stream.api as D
        import mochi.mofka.client as C
        out(api_d=M.client_api(M.GEN_DIASPORA, D), api_c=M.client_api(M.GEN_CLIENT, C),
            event_completed_callable=callable(getattr(D.FutureEvent, "completed")),
            flushed_completed_property=isinstance(inspect.getattr_static(
                __import__("pydiaspora_stream_api").FutureFlushed, "completed"), property),
            wait_doc=D.FutureEvent.wait.__doc__.splitlines()[0],
            has_new=hasattr(D.Driver, "new"),
            mofka_driver_params=str(inspect.signature(C.MofkaDriver.__init__)))
    ''', T_TOPIC="unused")
    assert res["api_d"] == res["api_c"] == "diaspora"
    assert res["event_completed_callable"] and res["flushed_completed_property"]
    assert "timeout_ms" in res["wait_doc"] and not res["has_new"]
    assert "**kwargs" in res["mofka_driver_params"]


def test_bad_topic_name_is_refused_before_any_call(mochi):
    _, env = mochi
    res, _ = _run(env, '''
        from flowcept.config import ConfigError
        try:
            M.MofkaTransport(cfg(mofka_topic="flowcept-x"), JOB)
            out(err=None)
        except ConfigError as e:
            out(err=str(e))
    ''', T_TOPIC="x", T_GROUP="/nonexistent/mofka.json")
    assert res["err"] and "^[a-zA-Z_][a-zA-Z0-9_]*$" in res["err"] and "\n" not in res["err"]


ROUNDTRIP = '''
    N = int(os.environ["N"])
    t = M.MofkaTransport(cfg(), JOB)
    fs = frames(N)
    for f in fs:
        t.publish(frame_key(f), memoryview(bytearray(f)))
    t.flush()
    assert t.take_unflushed() == []
    if os.environ.get("T_CLOSE_FIRST") == "1":
        t.close()
    src = M.MofkaSource(cfg(), "keeper_rt")
    got = read_all(src, N)
    extra = src.read(16, 300)                     # nothing more: exact count
    keys = [e.key.hex() for e in got]
    by_key = {frame_key(f).hex(): f for f in fs}
    ok_frames = all(e.frame == by_key.get(e.key.hex()) for e in got)
    src.ack(got)
    info = src.info()
    src.close()
    if os.environ.get("T_CLOSE_FIRST") != "1":
        t.close()
    out(n=len(got), extra=len(extra), keys=keys, want=[frame_key(f).hex() for f in fs],
        ok_frames=ok_frames, info=info, routing=got[0].routing() if got else None)
'''


def test_roundtrip_through_a_mofka_server(server, mochi):
    _, env = mochi
    res, _ = _run(env, ROUNDTRIP, N=60, T_TOPIC="flowcept_rt", T_GROUP=server.group_file,
                  T_CLOSE_FIRST=1)
    assert res["n"] == 60 and res["extra"] == 0
    # Ordering.Loose: the order may differ from the push order, every batch exactly once
    assert sorted(res["keys"]) == sorted(res["want"]) and len(set(res["keys"])) == 60
    assert res["ok_frames"]
    assert res["info"]["acked"] == 60 and res["info"]["held"] == 0
    assert res["info"]["protocol"] == "na+sm" and res["info"]["generation"] == "diaspora_stream.api"
    assert res["routing"]["job"] == "live" and res["routing"]["node"] == "nodeL"


def test_roundtrip_through_the_simple_backend(mochi):
    """diaspora's in-process test backend: the transport and the source share the driver."""
    _, env = mochi
    res, _ = _run(env, ROUNDTRIP, N=25, T_TOPIC="flowcept_simple", T_DRIVER=SIMPLE)
    assert res["n"] == 25 and res["extra"] == 0
    assert sorted(res["keys"]) == sorted(res["want"]) and len(set(res["keys"])) == 25
    assert res["ok_frames"]
    assert res["info"]["driver"] == SIMPLE and res["info"]["acked"] == 25


KILLED_KEEPER = '''
    n, acked_upto = int(os.environ["N"]), int(os.environ["ACK"])
    if os.environ.get("PUBLISH") == "1":
        t = M.MofkaTransport(cfg(), JOB)
        for f in frames(n):
            t.publish(frame_key(f), f)
        t.flush()
        t.close()
    src = M.MofkaSource(cfg(), os.environ["NAME"])
    got = read_all(src, n, limit_s=float(os.environ.get("LIMIT", "20")))
    got += src.read(16, 300)
    # commit the first `acked_upto`, and a later stretch with a hole before it: the hole
    # keeps the server's cursor at acked_upto
    src.ack(got[:acked_upto])
    src.ack(got[acked_upto + 3: acked_upto + 8])
    info = src.info()
    out(n=len(got), keys=[e.key.hex() for e in got], info=info)
    sys.stdout.flush()
    if os.environ.get("DIE") == "1":
        os.kill(os.getpid(), 9)                    # a keeper killed: no close, no goodbye
    src.close()
'''


def test_killed_keeper_resumes_under_its_name_without_replay(server, mochi):
    _, env = mochi
    common = dict(T_TOPIC="flowcept_restart", T_GROUP=server.group_file)
    first, proc = _run(env, KILLED_KEEPER, N=40, ACK=25, NAME="keeper_a", PUBLISH=1, DIE=1, **common)
    assert proc.returncode == -signal.SIGKILL
    assert first["n"] == 40
    # 25 acknowledged (one acknowledge call), the run after the hole held back
    assert first["info"]["acked"] == 25 and first["info"]["acknowledged_calls"] == 1
    assert first["info"]["held"] == 15
    all_keys = first["keys"]

    again, proc = _run(env, KILLED_KEEPER, N=15, ACK=15, NAME="keeper_a", LIMIT=10, **common)
    assert proc.returncode == 0
    assert again["n"] == 15, again                       # exactly what was not acknowledged
    assert again["keys"] == all_keys[25:]                # no replay of the acknowledged 25

    third, _ = _run(env, KILLED_KEEPER, N=1, ACK=0, NAME="keeper_a", LIMIT=1, **common)
    assert third["n"] == 0                               # everything acknowledged

    other, _ = _run(env, KILLED_KEEPER, N=40, ACK=40, NAME="keeper_b", **common)
    assert other["n"] == 40 and other["keys"] == all_keys  # a new name starts at 0


OUTAGE = '''
    t = M.MofkaTransport(cfg(), JOB)
    fs = frames(10)
    for f in fs[:5]:
        t.publish(frame_key(f), f)
    t.flush()
    os.kill(int(os.environ["SERVER_PID"]), 15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(int(os.environ["SERVER_PID"]), 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    err, where, t0 = None, None, time.monotonic()
    try:
        for f in fs[5:]:
            where = "publish"
            t.publish(frame_key(f), f)
        where = "flush"
        t.flush()
    except TransportUnavailable as e:
        err = str(e)
    elapsed = time.monotonic() - t0
    back = t.take_unflushed()
    import threading
    th = threading.Thread(target=t.close, daemon=True)
    th.start(); th.join(15)
    out(err=err, where=where, elapsed=elapsed, unflushed=[k.hex() for k, _ in back],
        spooled_frames_intact=all(bytes(d) == f for (k, d), f in zip(back, fs[5:5 + len(back)])),
        close_returned=not th.is_alive(), want=[frame_key(f).hex() for f in fs[5:]])
    sys.stdout.flush()
    os._exit(0)
'''


def test_server_stopped_mid_run_gives_transport_unavailable(server, mochi):
    _, env = mochi
    res, _ = _run(env, OUTAGE, T_TOPIC="flowcept_outage", T_GROUP=server.group_file,
                  T_TIMEOUT=5, SERVER_PID=server.pid)
    assert not server.running()
    assert res["err"], res                       # the caller spools on TransportUnavailable
    assert res["elapsed"] < 30
    # what was published after the outage and not confirmed is handed back for the spool
    if res["where"] == "flush":
        assert res["unflushed"] == res["want"] and res["spooled_frames_intact"]
    assert res["close_returned"], "close() hung after the outage"


RESTART = '''
    from support.mofka_server import MofkaServer
    srv = MofkaServer(os.environ["WORK"], os.environ["MOCHI_PREFIX"], dict(os.environ))
    os.environ["T_GROUP"] = srv.group_file
    t = M.MofkaTransport(cfg(), JOB)
    fs = frames(15)
    for f in fs[:5]:
        t.publish(frame_key(f), f)
    t.flush()
    srv.stop()                                    # outage
    err = None
    try:
        for f in fs[5:10]:
            t.publish(frame_key(f), f)
        t.flush()
    except TransportUnavailable as e:
        err = str(e)
    spooled = [k for k, _ in t.take_unflushed()]
    srv.start()                                   # back, at a new address in the group file
    time.sleep(1.1)                               # reconnection is tried at most once a second
    for f in fs[10:]:
        t.publish(frame_key(f), f)
    t.flush()
    src = M.MofkaSource(cfg(), "keeper_restart")
    got = read_all(src, 5, limit_s=10)
    got += src.read(16, 300)
    src.close(); t.close(); srv.stop()
    out(err=err, spooled=len(spooled), got=sorted(e.key.hex() for e in got),
        want=sorted(frame_key(f).hex() for f in fs[10:]))
'''


def test_transport_reconnects_when_the_server_comes_back(mochi, tmp_path):
    prefix, env = mochi
    res, _ = _run(env, RESTART, T_TOPIC="flowcept_back", T_TIMEOUT=3, WORK=tmp_path / "srv",
                  MOCHI_PREFIX=prefix)
    assert res["err"] and res["spooled"] == 5           # the outage: handed back for the spool
    assert res["got"] == res["want"]                    # after it, published to the new server


# -- a 4-rank job through Mofka into LMDB ----------------------------------------------------
APP = os.path.join(os.path.dirname(__file__), "..", "mpi", "apps", "count_app.py")


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
def test_four_ranks_through_mofka_and_a_keeper_store_every_record_once(server, mochi, tmp_path):
    _, env = mochi
    if not os.path.isfile(APP):
        pytest.skip(f"{APP} missing")
    topic = "flowcept_mpi"
    # the topic exists before the job (a site creates it with mofkactl or the API)
    _run(env, 'M._Connection(cfg(), "setup").close(); out(ok=True)', T_TOPIC=topic,
         T_GROUP=server.group_file)
    run_dir, shm = tmp_path / "runs4", tmp_path / "shm4"
    shm.mkdir()
    e = dict(env, FLOWCEPT_TRANSPORT="mofka", FLOWCEPT_MOFKA_GROUP_FILE=server.group_file,
             FLOWCEPT_MOFKA_TOPIC=topic, FLOWCEPT_RUN_DIR=str(run_dir),
             FLOWCEPT_SHM_DIR=str(shm), FLOWCEPT_JOB_ID="mofka4")
    tasks, children = 100, 2
    app = subprocess.run(["mpiexec", "-n", "4", sys.executable, APP, "--tasks", str(tasks),
                          "--children", str(children)],
                         env=e, capture_output=True, text=True, timeout=240)
    assert app.returncode == 0, app.stdout[-2000:] + app.stderr[-3000:]
    store = tmp_path / "store"
    keeper = subprocess.run(
        [sys.executable, "-m", "flowcept", "keeper", "run", "--transport", "mofka",
         "-o", f"mofka_group_file={server.group_file}", "-o", f"mofka_topic={topic}",
         "--name", "keeper_mpi", "--store-dir", str(store), "--exit-when-idle", "3"],
        env=e, capture_output=True, text=True, timeout=240)
    assert keeper.returncode == 0, keeper.stdout[-2000:] + keeper.stderr[-3000:]
    res, _ = _run(env, '''
        import collections
        from flowcept.query.tasks import read_records
        r = read_records(os.environ["STORE"])               # task records (no workflow records)
        recs = r.records
        ids = list(zip(recs["workflow_id"].tolist(), recs["task_id"].tolist()))
        out(n=len(ids), unique=len(set(ids)),
            ranks=sorted(collections.Counter(recs["rank"].tolist()).items()))
    ''', T_TOPIC=topic, STORE=store)
    want = 4 * tasks * (1 + children)
    assert res["n"] == res["unique"] == want, (res, keeper.stdout[-1000:])
    assert res["ranks"] == [[k, tasks * (1 + children)] for k in range(4)]
    assert "0 duplicates skipped, 0 rejected" in keeper.stdout
