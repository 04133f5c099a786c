"""The leader process: capture's drain runs in a helper process, never in the
application's interpreter, and nothing is lost when either side dies."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flowcept.query.tasks import read_tasks


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.update(FLOWCEPT_RUN_DIR=str(tmp_path / "runs"), FLOWCEPT_JOB_ID="j1",
               FLOWCEPT_SHM_DIR=str(tmp_path / "shm"), **extra)
    os.makedirs(tmp_path / "shm", exist_ok=True)
    return env


def _run(code, env, timeout=120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _f_tasks(tmp_path):
    return [t for t in read_tasks(str(tmp_path / "runs" / "j1")) if t.get("activity_id") == "f"]


def test_the_default_leader_is_another_process_and_stores_everything(tmp_path):
    r = _run("""
        import os
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x * 2

        with Flowcept(workflow_name="w"):
            d = runtime.current().drainer
            assert type(d).__name__ == "HelperLeader", type(d)
            assert d.proc.pid != os.getpid()
            helper = d.proc.pid
            assert [f(i) for i in range(50000)][-1] == 99998
        assert d.records >= 50000 and d.cpu_s > 0, (d.records, d.cpu_s)
        try:
            os.kill(helper, 0)
            print("helper still alive")
        except ProcessLookupError:
            print("ok")
    """, _env(tmp_path))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    tasks = _f_tasks(tmp_path)
    assert sorted(t["used"]["x"] for t in tasks) == list(range(50000))
    import glob
    assert not glob.glob(str(tmp_path / "shm" / "**" / "*.ring"), recursive=True)


def test_a_killed_leader_process_fails_over_without_loss_or_duplicates(tmp_path):
    r = _run("""
        import os, signal, time
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x

        with Flowcept(workflow_name="w"):
            d = runtime.current().drainer
            for i in range(20000):
                f(i)
            d.drain_once(max_batches=1 << 20)      # some batches committed by the helper
            os.kill(d.proc.pid, signal.SIGKILL)
            time.sleep(0.2)
            for i in range(20000, 40000):
                assert f(i) == i                    # capture goes on
            d.drain_once(max_batches=1 << 20)      # the helper is gone: fails over here
            assert type(d._fallback).__name__ == "Drainer"
        print("ok")
    """, _env(tmp_path))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert "leader process failed" in r.stderr
    xs = sorted(t["used"]["x"] for t in _f_tasks(tmp_path))
    assert xs == list(range(40000))          # every record once


def test_the_leader_process_drains_a_killed_parent(tmp_path):
    env = _env(tmp_path)
    code = textwrap.dedent("""
        import os, sys, time
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x

        fc = Flowcept(workflow_name="w").start()
        for i in range(30000):
            f(i)
        print(runtime.current().drainer.proc.pid, flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        helper = int(p.stdout.readline())
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(helper, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(helper, signal.SIGKILL)
            pytest.fail("the leader process outlived its killed parent by 60 s")
    finally:
        if p.poll() is None:
            p.kill()
    xs = sorted(t["used"]["x"] for t in _f_tasks(tmp_path))
    assert xs == list(range(30000))


def test_without_an_interpreter_to_start_it_drains_in_process(tmp_path):
    r = _run("""
        import sys
        sys.executable = ""                 # e.g. an embedded interpreter
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x

        with Flowcept(workflow_name="w"):
            assert [f(i) for i in range(100)] == list(range(100))
            assert type(runtime.current().drainer._fallback).__name__ == "Drainer"
        print("ok")
    """, _env(tmp_path))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert "draining in this process" in r.stderr
    assert len(_f_tasks(tmp_path)) == 100


def test_the_thread_leader_is_still_there(tmp_path):
    r = _run("""
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x

        with Flowcept(workflow_name="w"):
            f(1)
            assert type(runtime.current().drainer).__name__ == "Drainer"
        print("ok")
    """, _env(tmp_path, FLOWCEPT_LEADER="thread"))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert len(_f_tasks(tmp_path)) == 1


def test_a_wrong_leader_name_is_a_one_line_error(tmp_path):
    r = _run("""
        from flowcept import Flowcept
        try:
            Flowcept(workflow_name="w", leader="nope").start()
        except Exception as e:
            print(type(e).__name__, str(e))
    """, _env(tmp_path))
    assert "leader" in r.stdout and "process" in r.stdout and "thread" in r.stdout, \
        r.stdout + r.stderr
    assert len(r.stdout.strip().splitlines()) == 1


def test_recovery_leaves_a_ring_alone_while_a_live_leader_holds_it(tmp_path):
    """A ring whose producer ended but whose leader still drains it (e.g. a
    leader process finishing after its rank was killed) is not recovered
    beside that leader; once the leader is gone it is."""
    from flowcept.config import load_config
    from flowcept.native.ring import Ring
    from flowcept.node.recovery import recover_job
    from flowcept.record import job as jobs
    config = load_config(env={}, shm_dir=str(tmp_path / "shm"), run_dir=str(tmp_path / "runs"))
    directory = jobs.ring_dir(config, "j2")
    os.makedirs(directory, mode=0o700)
    path = os.path.join(directory, "000000.1.ring")
    ring = Ring.create(path, config, jobs.job_id_of("j2"), 7, 0)
    aid = ring.intern("f")
    from flowcept.native import lib
    for i in range(1, 101):
        assert lib.fc_ring_push_task(ring.handle, i, 0, 7, i, i + 1, 0, 0, aid, 0, 0, b"", 0) >= 0
    ring.close()                                   # the producer ended
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from flowcept.native.ring import Ring
        r = Ring.open({path!r})
        assert r.lock_consumer()
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = recover_job("j2", config=config)
        assert report.skipped_live == [path] and report.records == 0
        assert os.path.exists(path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    report = recover_job("j2", config=config)
    assert report.records == 100 and not os.path.exists(path)


def test_a_flowcept_folder_where_the_job_runs_does_not_shadow_the_leader(tmp_path):
    work = tmp_path / "work"
    (work / "flowcept").mkdir(parents=True)
    (work / "flowcept" / "__init__.py").write_text("raise ImportError('the wrong flowcept')\n")
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime

        @flowcept_task
        def f(x):
            return x

        with Flowcept(workflow_name="w"):
            f(1)
            d = runtime.current().drainer
            assert d._fallback is None and d.proc is not None
        print("ok")
    """))
    env = _env(tmp_path)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=str(work))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert "leader process failed" not in r.stderr
    assert len(_f_tasks(tmp_path)) == 1
