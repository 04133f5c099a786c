"""Every adapter kind, its observer SIGKILLed at random points while events
happen and restarted: every observed event is stored exactly once.

The observer is ``flowcept observe`` in its own process group; each kill
takes it alone (its orphaned leader process drains its rings) or with its
leader (the rings wait for ``flowcept recover``).  Real sources: a file
tree with watchdog/inotify on ext4 (inode numbers reused at once, names
that are not UTF-8), an SQLite database written by another connection, an
MLflow sqlite tracking store written by mlflow itself, a RabbitMQ broker.
"""
import base64
import glob
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from restart_support import KilledObserver, recover_all, stored_tasks

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("FLOWCEPT_TEST_SEED", "0")) or random.randrange(1 << 30)


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _crash_report(log_dir):
    """(records found stored after a crash, records emitted again), over all runs."""
    settled = again = 0
    for path in glob.glob(os.path.join(log_dir, "observe-*.log")):
        for line in open(path, errors="replace"):
            if "after a crash" in line:
                words = line.split()
                settled += int(words[words.index("found") - 2])
                again += int(words[words.index("emitted") - 1])
    return settled, again


def _each_once(ids, expected):
    """Every expected id stored, each exactly once, nothing else."""
    got = Counter(ids)
    assert sorted(got) == sorted(expected), (set(expected) ^ set(got))
    assert set(got.values()) == {1}, [k for k, v in got.items() if v > 1]


def _finish(obs, flowcept_env, log_dir):
    obs.stop_killing()
    obs.catch_up()
    recover_all(_env(), flowcept_env["shm_dir"])
    pins = glob.glob(os.path.join(flowcept_env["shm_dir"], "*", "adapter-pins", "*"))
    assert pins == []                  # a clean stop leaves no pinned ring
    settled, again = _crash_report(log_dir)
    print(f"seed {SEED}: {obs.kills} kills, {obs.runs} runs, {settled} record(s) of crashed "
          f"runs found stored, {again} emitted again")
    assert again == 0                  # every crash was settled by its ring, none by re-emission
    assert obs.kills >= 6


# -- files --------------------------------------------------------------------
def _name(i: int) -> str:
    if i % 9 == 4:   # not UTF-8: Linux allows any bytes but / and NUL
        return os.fsdecode(b"bad-\xff\xfe-%03d.dat" % i)
    return f"f{i:03d}.dat"


class _FileWorkload:
    """Creates, appends to, renames and deletes files; deletes are followed
    at once by a creation (ext4 gives the new file the freed inode)."""

    def __init__(self, root, rng):
        self.root, self.rng = root, rng
        self.live = []          # names present
        self.renames = set()    # (src, dst) names
        self.reused = 0         # creations that got the inode of the file just deleted
        self.n = 0

    def create(self):
        name = _name(self.n)
        self.n += 1
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(b"x" * (10 + self.n))
        self.live.append(name)
        return name

    def step(self):
        r = self.rng.random()
        if r < 0.25 and len(self.live) > 5:      # rm old; echo > new
            old = self.live.pop(self.rng.randrange(len(self.live)))
            ino = os.stat(os.path.join(self.root, old)).st_ino
            os.unlink(os.path.join(self.root, old))
            new = self.create()
            self.reused += os.stat(os.path.join(self.root, new)).st_ino == ino
        elif r < 0.40 and self.live:             # append
            with open(os.path.join(self.root, self.rng.choice(self.live)), "ab") as f:
                f.write(b"+" * self.rng.randrange(1, 50))
        elif r < 0.50 and self.live:             # rename
            i = self.rng.randrange(len(self.live))
            src, dst = self.live[i], _name(self.n)
            self.n += 1
            os.rename(os.path.join(self.root, src), os.path.join(self.root, dst))
            self.live[i] = dst
            self.renames.add((src, dst))
        else:
            self.create()


def _fkey(generated, field="path"):
    b64 = generated.get(f"{field}_bytes_b64")
    raw = base64.b64decode(b64) if b64 else generated[field].encode()
    return os.path.basename(raw)


def test_files_observer_killed_and_restarted(flowcept_env, tmp_path):
    pytest.importorskip("watchdog", reason="watchdog not installed: pip install 'flowcept[files]'")
    rng = random.Random(SEED)
    root = tmp_path / "data"
    root.mkdir()
    work = _FileWorkload(str(root), rng)
    for _ in range(20):                           # the baseline: there before the first start
        work.create()
    baseline = {(os.fsencode(n), os.stat(root / n).st_size, os.stat(root / n).st_mtime_ns)
                for n in work.live}
    logs = tmp_path / "logs"
    logs.mkdir()
    obs = KilledObserver(["files", root, "--checkpoint", tmp_path / "ck.json",
                          "--poll-interval", "0.05"], _env(), SEED, str(logs), 0.0, 1.5)
    obs.run_clean(1)                              # takes the baseline
    obs.start_killing()
    while not obs.enough() or work.n < 130:
        work.step()
        time.sleep(rng.uniform(0.0, 0.12))
    _finish(obs, flowcept_env, str(logs))

    assert work.n >= 130 and work.reused >= 10    # the inode-reuse case happened, many times
    recs = stored_tasks(flowcept_env["run_dir"], "file:")
    assert len({t["task_id"] for t in recs}) == len(recs)
    adds, dels, moved_from, modified = Counter(), Counter(), Counter(), set()
    # the real renames, chained (a file renamed twice while no observer ran moved once)
    reach = {}
    for src, dst in sorted(work.renames, key=lambda r: r[1]):
        reach[dst] = reach.get(src, {src}) | {src}
    for t in recs:
        event, g = t["activity_id"][len("file:"):], t["generated"]
        v = (_fkey(g), g["size"], g["mtime_ns"])
        if event == "deleted":
            dels[v] += 1
            continue
        assert event in ("created", "modified", "moved"), event
        adds[v] += 1
        if event == "modified":
            modified.add(v)
        if event == "moved":   # only a real rename is a move (never rm old; echo > new)
            src = _fkey(g, "moved_from")
            assert os.fsdecode(src) in reach.get(os.fsdecode(v[0]), ()), (src, v[0])
            moved_from[(src, v[1], v[2])] += 1
    assert max(adds.values()) == 1 and max(dels.values()) == 1       # exactly once
    assert not moved_from or max(moved_from.values()) == 1
    assert any(b"\xff" in v[0] for v in adds)                        # non-UTF-8 names recorded
    final = {(os.fsencode(n), os.stat(root / n).st_size, os.stat(root / n).st_mtime_ns)
             for n in work.live}
    versions = set(adds) | baseline
    assert final <= versions                      # every file there at the end was recorded
    assert set(dels) <= versions                  # nothing deleted that was not recorded
    # each recorded version that is gone was ended exactly once: deleted, moved away, or
    # followed by a recorded modification of the same file
    by_path = {}
    for v in versions:
        by_path.setdefault(v[0], []).append(v)
    superseded = Counter()
    for vs in by_path.values():
        vs.sort(key=lambda v: v[2])
        for older, newer in zip(vs, vs[1:]):
            superseded[older] += newer in modified
    for v in versions:
        ended = dels[v] + moved_from[v] + superseded[v]
        assert ended == (0 if v in final else 1), (v, dels[v], moved_from[v], superseded[v])


# -- sqlite -------------------------------------------------------------------
def test_sqlite_observer_killed_and_restarted(flowcept_env, tmp_path):
    rng = random.Random(SEED)
    db = str(tmp_path / "app.db")
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT, n REAL)")
    logs = tmp_path / "logs"
    logs.mkdir()
    obs = KilledObserver(["sqlite", db, "--table", "jobs", "--checkpoint", tmp_path / "ck.json",
                          "--poll-interval", "0.05"], _env(), SEED, str(logs), 0.0, 1.5)
    obs.start_killing()
    n = 0
    while not obs.enough():
        c.execute("BEGIN")
        for _ in range(rng.randrange(1, 600)):   # bursts: some kills land inside an emission
            n += 1
            if n % 17 == 5:   # TEXT that is not UTF-8 must not stop the observer
                c.execute("INSERT INTO jobs VALUES (?, CAST(? AS TEXT), ?)", (n, b"s\xff\xfe", n / 3))
            else:
                c.execute("INSERT INTO jobs VALUES (?, ?, ?)", (n, f"s{n}", n / 3))
        c.execute("COMMIT")
        time.sleep(rng.uniform(0.0, 0.1))
    c.close()
    _finish(obs, flowcept_env, str(logs))

    recs = stored_tasks(flowcept_env["run_dir"], "sqlite:jobs")
    assert n > 500
    _each_once([t["custom_metadata"]["rowid"] for t in recs], range(1, n + 1))
    bad = next(t for t in recs if t["custom_metadata"]["rowid"] == 5)
    assert bad["generated"]["state"] == "s\\xff\\xfe"


# -- mlflow (sqlite tracking store) -----------------------------------------------
MLFLOW_WRITER = r"""
import sys, time, random, mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("restart")
rng, end = random.Random(int(sys.argv[3])), time.monotonic() + float(sys.argv[2])
ids = []
while time.monotonic() < end:
    with mlflow.start_run(run_name=f"r{len(ids)}") as run:
        mlflow.log_param("i", len(ids))
        mlflow.log_metric("loss", rng.random())
    ids.append(run.info.run_id)
    time.sleep(rng.uniform(0, 0.1))
print(" ".join(ids))
"""


def test_mlflow_observer_killed_and_restarted(flowcept_env, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'flowcept[test-adapters]'")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", "import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
                    "mlflow.set_experiment('restart')", uri], check=True, capture_output=True,
                   timeout=300, cwd=tmp_path)   # the schema, before any observer opens the file
    logs = tmp_path / "logs"
    logs.mkdir()
    obs = KilledObserver(["mlflow", "--tracking-uri", uri, "--checkpoint", tmp_path / "ck.json",
                          "--poll-interval", "0.05"], _env(), SEED, str(logs), 0.0, 1.5)
    obs.start_killing()
    run_ids = []
    while not obs.enough():
        run_ids += subprocess.run([sys.executable, "-c", MLFLOW_WRITER, uri, "8",
                                   str(SEED + len(run_ids))], check=True, capture_output=True,
                                  text=True, timeout=600, cwd=tmp_path).stdout.split()
    _finish(obs, flowcept_env, str(logs))

    recs = stored_tasks(flowcept_env["run_dir"], "r")
    assert len(run_ids) >= 20
    _each_once([t["custom_metadata"]["run_id"] for t in recs
                if t.get("custom_metadata", {}).get("adapter") == "mlflow"], run_ids)


# -- rabbitmq -----------------------------------------------------------------
def test_rabbitmq_observer_killed_and_restarted(flowcept_env, tmp_path, broker):
    pika = pytest.importorskip("pika", reason="pika not installed: pip install 'flowcept[rabbitmq]'")
    rng = random.Random(SEED)
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.exchange_declare("restart", exchange_type="topic", durable=True)
    ch.queue_declare("observe-restart", durable=True)   # the observer's queue, so nothing is
    ch.queue_bind("observe-restart", "restart", routing_key="#")   # published before it exists
    logs = tmp_path / "logs"
    logs.mkdir()
    obs = KilledObserver(["rabbitmq", broker.url, "--exchange", "restart", "--queue",
                          "observe-restart", "--poll-interval", "0.05"], _env(), SEED, str(logs),
                         0.0, 1.5)
    obs.start_killing()
    n = 0
    while not obs.enough():
        for _ in range(rng.randrange(1, 200)):
            ch.basic_publish("restart", f"step.{n % 3}", f'{{"n": {n}}}'.encode(),
                             pika.BasicProperties(message_id=f"m{n}", delivery_mode=2))
            n += 1
        time.sleep(rng.uniform(0.0, 0.1))
    conn.close()
    _finish(obs, flowcept_env, str(logs))

    recs = stored_tasks(flowcept_env["run_dir"], "rabbitmq:restart")
    assert n > 500
    _each_once([t["used"]["message_id"] for t in recs], [f"m{i}" for i in range(n)])
