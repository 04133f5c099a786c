"""The documentation runs as written: every shell block and Python snippet of
README.md and docs/*.md is executed here, and so are the examples of
`flowcept serve --help`.

* A fixture runs the README's demo (``bash scripts/demo.sh``, small sizes through
  its STEPS/N variables) as job 12345; each block then runs in a copy of that
  workspace: ``flowcept-runs/12345`` (the store), ``job.h5`` (its archive),
  ``my_workflow.py`` and ``app.py`` (small instrumented programs).
* Placeholders are filled: ``<job>`` is 12345; the ports 8008, 8009, 9464 and
  6379 become free loopback ports; ``/data/`` becomes ``./data/``.
* Services the docs start (``flowcept serve``, ``metrics``, ``mcp --transport
  http``, ``keeper run``, a ``redis-server &``) run in the block's process group:
  a service command returns once it listens (or has run 2 s without failing) and
  the whole group is stopped when the block ends.
* Every fenced block must say what it is: ``sh``/``bash`` and ``python`` are run,
  ``text`` (pictures, layouts) is not.  A block that cannot run here (a real
  cluster, another site's hosts, a chat endpoint) is preceded by
  ``<!-- not run: reason -->``; any other block that fails fails the test.
"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
RUN = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python"}
DATA = {"text", "c", "toml", "json", "yaml", "ini", "dockerfile", "make"}
JOB = "12345"
PORTS = ("8008", "8009", "9464", "6379")
MARK = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")

pytestmark = pytest.mark.timeout(600)


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    not_run: Optional[str]

    @property
    def id(self):
        return f"{self.doc}:{self.line}"


def blocks(doc: str):
    lines = open(os.path.join(ROOT, doc), encoding="utf-8").read().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```\s*(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = MARK.search(lines[k]) if k >= 0 else None
        out.append(Block(doc, i + 1, m.group(1).lower(), "\n".join(lines[i + 1:j]) + "\n",
                         mark.group(1) if mark else None))
        i = j + 1
    return out


ALL = [b for d in DOCS for b in blocks(d)]
RUNNABLE = [b for b in ALL if b.lang in RUN]


def test_every_block_says_what_it_is():
    assert len(RUNNABLE) >= 20
    for b in ALL:
        assert b.lang in RUN or b.lang in DATA, (
            f"{b.id}: fenced block without a known language ({b.lang or 'none'}): tag it sh, python or text")
        if b.not_run is not None:
            assert len(b.not_run) > 10 and b.lang in RUN, f"{b.id}: a not-run mark needs a reason"


# -- the workspace -------------------------------------------------------------------------------
MY_WORKFLOW = '''from flowcept import Flowcept, flowcept_task


@flowcept_task
def diffuse(step):
    return step * 0.5


with Flowcept(workflow_name="my-workflow"):
    for i in range(10):
        diffuse(i)
'''

APP = '''import sys
from flowcept import Flowcept, flowcept_task


@flowcept_task
def work(i):
    return i * i


with Flowcept(workflow_name="app"):
    total = sum(work(i) for i in range(100))
print("app ran with", sys.argv[1:], total)
'''


def _free_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return str(port)


def _env(work):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.pop("SLURM_JOB_ID", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(FLOWCEPT_RUN_DIR=os.path.join(work, "flowcept-runs"), FLOWCEPT_JOB_ID=JOB,
               FLOWCEPT_SHM_DIR=os.path.join(work, "shm"))
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The README's demo (job 12345, small sizes), its archive as job.h5, and the
    programs the docs name."""
    work = str(tmp_path_factory.mktemp("docs-demo"))
    env = _env(work)
    env.update(RANKS="4", STEPS="20", N="64")
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh")], env=env, cwd=work,
                       capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    runs = os.path.join(work, "flowcept-runs")
    assert os.path.isfile(os.path.join(runs, f"{JOB}.report.html")), os.listdir(runs)
    shutil.copy(os.path.join(runs, f"{JOB}.h5"), os.path.join(work, "job.h5"))
    for name, text in (("my_workflow.py", MY_WORKFLOW), ("app.py", APP)):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    return work


# -- running a block --------------------------------------------------------------------------------
PRELUDE = r'''
set -eo pipefail
__docs_ports=(__FREE_PORTS__)
flowcept() {
    # services run in the background of this block; the test stops the block's process group
    local svc=""
    case "$1" in
        serve|metrics) svc=$1 ;;
        mcp) case " $* " in *" --transport http "*) svc=mcp ;; esac ;;
        keeper) [ "${2:-}" = run ] && svc=keeper ;;
    esac
    if [ -z "$svc" ]; then
        command flowcept "$@" </dev/null
        return $?
    fi
    local args=("$@") port=""
    for ((i = 0; i < ${#args[@]}; i++)); do
        [ "${args[i]}" = --port ] && port=${args[i+1]}
    done
    if [ -z "$port" ] && [ "$svc" != keeper ]; then
        port=${__docs_ports[0]}; __docs_ports=("${__docs_ports[@]:1}"); args+=(--port "$port")
    fi
    local log; log=$(mktemp "$PWD/.svc-XXXXXX.log")
    command flowcept "${args[@]}" </dev/null >"$log" 2>&1 &
    local pid=$! n
    for ((n = 0; n < 120; n++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "docs test: flowcept $svc exited: $(tail -c 2000 "$log")" >&2
            wait "$pid"
            return 1
        fi
        if [ -n "$port" ]; then
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        elif [ "$n" -ge 8 ]; then
            return 0
        fi
        sleep 0.25
    done
    echo "docs test: flowcept $svc did not come up: $(tail -c 2000 "$log")" >&2
    return 1
}
'''


def fill(text: str, ports: dict) -> str:
    text = text.replace("<job>", JOB).replace("/data/", "./data/")
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text


def run_block(b: Block, work: str, timeout: float = 420):
    ports = {p: _free_port() for p in PORTS}
    text = fill(b.text, ports)
    if b.lang == "python":
        path = os.path.join(work, "snippet.py")
        with open(path, "w") as f:
            f.write(text)
        cmd = [sys.executable, path]
    else:
        prelude = PRELUDE.replace("__FREE_PORTS__", " ".join(_free_port() for _ in range(4)))
        with open(os.path.join(work, "block.sh"), "w") as f:
            f.write(prelude + text)
        cmd = ["bash", os.path.join(work, "block.sh")]
    # output to files: services the block leaves running keep pipes open, files do not wait
    with open(os.path.join(work, ".block.out"), "w+") as fo, open(os.path.join(work, ".block.err"), "w+") as fe:
        proc = subprocess.Popen(cmd, cwd=work, env=_env(work), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _stop_group(proc.pid)
        proc.wait()
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if proc.returncode in (-signal.SIGTERM, -signal.SIGKILL):
        raise AssertionError(f"{b.id} ran past {timeout}s:\n{text}\n{out[-2000:]}\n{err[-2000:]}")
    return proc.returncode, out, err, text


def _stop_group(pgid: int) -> None:
    """Stops what the block left running: its own process group, by its id."""
    import time
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.mark.parametrize("b", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs_as_written(b, workspace, tmp_path):
    if b.not_run is not None:
        pytest.skip(f"marked in {b.doc}: not run: {b.not_run}")
    if b.text.strip().startswith("bash scripts/demo.sh"):
        return   # the workspace fixture ran it (and checked its archive and report)
    work = str(tmp_path / "work")
    shutil.copytree(workspace, work, symlinks=True)
    rc, out, err, text = run_block(b, work)
    assert rc == 0, f"{b.id} failed ({rc}):\n{text}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"


def test_serve_help_examples_run(workspace, tmp_path):
    """The examples printed by `flowcept serve --help` (a server and a curl against it)."""
    h = subprocess.run([sys.executable, "-m", "flowcept", "serve", "--help"], capture_output=True, text=True,
                       timeout=60)
    lines = [x.strip() for x in h.stdout.splitlines() if x.startswith(("  flowcept ", "  curl "))]
    assert any(x.startswith("curl ") for x in lines) and any(x.startswith("flowcept serve") for x in lines)
    work = str(tmp_path / "work")
    shutil.copytree(workspace, work, symlinks=True)
    b = Block("flowcept serve --help", 0, "sh", "\n".join(lines) + "\n", None)
    rc, out, err, text = run_block(b, work)
    assert rc == 0, f"{text}\n{out[-2000:]}\n{err[-2000:]}"
    assert '"status":"ERROR"' in out or '"total":0' in out, out[-500:]
