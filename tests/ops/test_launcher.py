"""`flowcept run script.py`: an unmodified script captured as a run task plus its top-level
function calls."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys

    def square(x):
        return x * x

    def total(n):
        return sum(square(i) for i in range(n))

    async def later(v):
        return v + 1

    class K:
        def method(self):          # methods are not wrapped
            return 1

    if __name__ == "__main__":
        import asyncio
        K().method()
        print("total", total(int(sys.argv[1])), asyncio.run(later(1)), __name__)
        sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
""")


def _run(tmp_path, script_args=(), opts=(), script=SCRIPT, name="app.py", env_extra=None,
         module=True):
    app = tmp_path / name
    app.write_text(script)
    env = dict(os.environ, **(env_extra or {}))
    for k in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "flowcept", "run", *opts, str(app), *script_args]
    if not module:
        exe = shutil.which("flowcept")
        if exe is None:
            pytest.skip("the flowcept console script is not on PATH (pip install -e .)")
        cmd = [exe, *cmd[3:]]
    return subprocess.run(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def _tasks(run_dir):
    from flowcept.query.tasks import read_tasks
    return read_tasks(run_dir)


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "console-script"])
def test_run_records_script_and_top_level_functions(tmp_path, run_dir, module):
    p = _run(tmp_path, ["5"], module=module)
    assert p.returncode == 0, p.stderr
    assert "total 30 2 __main__" in p.stdout
    tasks = _tasks(run_dir)
    by = {}
    for t in tasks:
        by.setdefault(t["activity_id"], []).append(t)
    assert sorted(by) == ["later", "run:app.py", "square", "total"]
    assert len(by["square"]) == 5 and len(by["total"]) == 1 and len(by["later"]) == 1
    run = by["run:app.py"][0]
    assert run["status"] == "FINISHED"
    assert run["used"]["argv"] == [str(tmp_path / "app.py"), "5"]
    assert run["used"]["script"] == str(tmp_path / "app.py")
    assert sorted(run["used"]["wrapped_functions"]) == ["later", "square", "total"]
    assert run["generated"]["exit_status"] == 0
    tot = by["total"][0]
    assert tot["used"] == {"n": 5} and tot["generated"] == {"return": 30}
    assert tot["parent_task_id"] == run["task_id"]
    assert {s["parent_task_id"] for s in by["square"]} == {tot["task_id"]}
    assert sorted(s["used"]["x"] for s in by["square"]) == [0, 1, 2, 3, 4]


def test_exit_status_and_error_are_recorded(tmp_path, run_dir):
    p = _run(tmp_path, ["3", "7"])
    assert p.returncode == 7
    run = [t for t in _tasks(run_dir) if t["activity_id"] == "run:app.py"][0]
    assert run["status"] == "ERROR" and run["generated"]["exit_status"] == 7


def test_exception_in_script(tmp_path, run_dir):
    script = "def boom(x):\n    raise ValueError('bad ' + str(x))\n\nboom(3)\n"
    p = _run(tmp_path, [], script=script, name="boom.py")
    assert p.returncode == 1
    assert "ValueError: bad 3" in p.stderr and "boom.py" in p.stderr
    tasks = {t["activity_id"]: t for t in _tasks(run_dir)}
    assert tasks["boom"]["status"] == "ERROR"
    assert tasks["boom"]["error"]["message"] == "bad 3"
    assert tasks["run:boom.py"]["status"] == "ERROR"
    assert tasks["run:boom.py"]["error"]["type"].endswith("ValueError")


def test_no_functions_records_only_the_run(tmp_path, run_dir):
    p = _run(tmp_path, ["4"], ["--no-functions"])
    assert p.returncode == 0, p.stderr
    assert [t["activity_id"] for t in _tasks(run_dir)] == ["run:app.py"]


def test_run_dir_option_and_workflow(tmp_path):
    out = tmp_path / "elsewhere"
    p = _run(tmp_path, ["2"], ["--run-dir", str(out), "--workflow-name", "wf1"])
    assert p.returncode == 0, p.stderr
    assert len(_tasks(str(out))) == 1 + 1 + 2 + 1
    from flowcept.query.tasks import read_workflows
    docs = list(read_workflows(str(out)).values())
    assert docs and docs[0]["name"] == "wf1"


def test_already_decorated_functions_are_not_wrapped_twice(tmp_path, run_dir):
    script = textwrap.dedent("""
        from flowcept import flowcept_task

        @flowcept_task
        def f(x):
            return x

        def g(x):
            return f(x)

        g(1)
    """)
    p = _run(tmp_path, [], script=script, name="deco.py")
    assert p.returncode == 0, p.stderr
    acts = sorted(t["activity_id"] for t in _tasks(run_dir))
    assert acts == ["f", "g", "run:deco.py"]


def test_missing_script_is_a_usage_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "flowcept", "run", str(tmp_path / "nope.py")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 2 and "no such script" in p.stderr


def test_in_process_run_restores_interpreter_state(tmp_path, run_dir):
    from flowcept.ops import launcher
    from flowcept.capture import session as runtime
    app = tmp_path / "inproc.py"
    app.write_text("import sys\ndef f():\n    return sys.argv[1:]\nresult = f()\n")
    argv, main = sys.argv[:], sys.modules["__main__"]
    assert launcher.run_script(str(app), ["a", "b"]) == 0
    assert sys.argv == argv and sys.modules["__main__"] is main
    assert runtime.current() is None
    acts = sorted(t["activity_id"] for t in _tasks(run_dir))
    assert acts == ["f", "run:inproc.py"]
    f = [t for t in _tasks(run_dir) if t["activity_id"] == "f"][0]
    assert f["generated"] == {"return": ["a", "b"]}


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_run_under_mpiexec_captures_every_rank(tmp_path, run_dir):
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec not on PATH (pip install mpich mpi4py)")
    pytest.importorskip("mpi4py")
    app = tmp_path / "mpiapp.py"
    app.write_text(textwrap.dedent("""
        from mpi4py import MPI

        def work(r):
            return r * 10

        comm = MPI.COMM_WORLD
        total = comm.allreduce(work(comm.Get_rank()))
    """))
    p = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-m", "flowcept", "run", str(app)],
                       cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=150)
    assert p.returncode == 0, p.stderr
    tasks = _tasks(run_dir)
    runs = sorted(t["rank"] for t in tasks if t["activity_id"] == "run:mpiapp.py")
    work = sorted((t["rank"], t["generated"]["return"]) for t in tasks if t["activity_id"] == "work")
    assert runs == [0, 1, 2]
    assert work == [(0, 0), (1, 10), (2, 20)]
