"""The embedded transport sets aside a batch whose contents its store refuses,
so the ring is released and the leader goes on (never retried forever)."""
import os
import subprocess
import sys
import textwrap


def test_a_hostile_workflow_record_is_quarantined_and_the_rest_stored(tmp_path):
    code = textwrap.dedent("""
        import msgpack, time
        from flowcept import Flowcept, flowcept_task
        from flowcept.capture import session as runtime
        from flowcept.native import lib
        from flowcept.record.layout import FLAG_WORKFLOW, FLAG_PAYLOAD_MSGPACK

        @flowcept_task
        def f(x):
            return x + 1

        with Flowcept(workflow_name="w"):
            assert f(1) == 2
            s = runtime.current()
            s.drainer.drain_once(max_batches=1 << 20)   # the good records in their own batch
            bad = msgpack.packb([1, 2, 3])               # a workflow document that is a list
            now = time.time_ns()
            rc = lib.fc_ring_push_task(s.handle, 0, 0, s.workflow_id, now, now, 0, 0,
                                       s.activity_id("workflow"), 0,
                                       FLAG_WORKFLOW | FLAG_PAYLOAD_MSGPACK, bad, len(bad))
            assert rc >= 0, rc
            s.drainer.drain_once(max_batches=1 << 20)
            assert s.drainer.transport.refused == 1
            assert f(2) == 3
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    # the thread leader: the test reads the transport's counter in this process
    env.update(FLOWCEPT_RUN_DIR=str(tmp_path / "runs"), FLOWCEPT_JOB_ID="j1",
               FLOWCEPT_LEADER="thread")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert "refused batch" in r.stderr and "quarantine" in r.stderr
    from flowcept.query.tasks import read_tasks
    from flowcept.store.quarantine import Quarantine
    tasks = [t for t in read_tasks(str(tmp_path / "runs" / "j1")) if t.get("activity_id") == "f"]
    assert sorted(t["used"]["x"] for t in tasks) == [1, 2]
    nodes = os.listdir(tmp_path / "runs" / "j1" / "store")
    q = Quarantine(str(tmp_path / "runs" / "j1" / "store" / nodes[0]), readonly=True)
    got = list(q)
    assert len(got) == 1 and got[0]["reason"] == "store_refused" and "list" in got[0]["detail"]
