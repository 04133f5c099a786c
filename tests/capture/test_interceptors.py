"""Flowcept(interceptors=[...]) as Flowcept users write it: adapters started
with the workflow, through the same session, stopped with it."""
import os
import sqlite3
import subprocess
import sys
import textwrap


def run(code, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.update(FLOWCEPT_RUN_DIR=str(tmp_path / "runs"), FLOWCEPT_JOB_ID="j1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(tmp_path))


def test_an_sqlite_interceptor_records_rows_into_the_workflow_store(tmp_path):
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("create table results (step integer, energy real)")
    con.executemany("insert into results values (?, ?)", [(i, i * 0.5) for i in range(5)])
    con.commit()
    con.close()
    r = run(f"""
        from flowcept import Flowcept
        with Flowcept(interceptors=["instrumentation", "sqlite"], workflow_name="w",
                      sqlite_path={str(db)!r}, sqlite_table="results", sqlite_poll_interval=0.05):
            pass
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    from flowcept.query.tasks import read_tasks
    rows = [t for t in read_tasks(str(tmp_path / "runs" / "j1")) if "sqlite" in str(t.get("activity_id"))]
    assert len(rows) == 5, rows[:2]


def test_an_unknown_interceptor_is_a_clear_error(tmp_path):
    r = run("""
        from flowcept import Flowcept
        from flowcept.config import ConfigError
        try:
            Flowcept(interceptors=["mlfow"]).start()
        except ConfigError as e:
            print("refused:", e)
    """, tmp_path)
    assert "refused: Flowcept(interceptors=['mlfow'])" in r.stdout and "mlflow" in r.stdout, \
        r.stdout + r.stderr
