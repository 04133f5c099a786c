"""Many nodes, many keepers, restarted anywhere: exactly once through every
way in.

One MPI job of 4 emulated nodes x 2 ranks (tests/support/nodes.py: each
node in its own UTS namespace, its own host name, its own node leader)
publishes through two Redis shards, or a 4-partition Kafka topic (Tansu),
to three keeper processes.  While batches flow, keeper A is SIGKILLed and
replaced by A2 in another directory with ``--peer-store`` (the recipe that
stores nothing twice), and keeper B is SIGKILLed and replaced by B2 in
another directory without it (a replacement that cannot see the old
directory: batches B committed but had not acknowledged are stored again,
and readers drop them by batch id).  Then every task must come back
exactly once through ``flowcept query``, ``flowcept serve`` over HTTP and
the HDF5 archive, and no batch may be stored twice among the keepers that
see each other.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from flowcept.keeper.service import STATUS_PREFIX, STATUS_SUFFIX
from flowcept.store import open_store_at, store_dirs_at
from support.nodes import NodeJob, nodes_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "node_app.py")

NODES = ["nid001000", "nid001001", "nid001002", "nid001003"]
RANKS_PER_NODE = 2
ROUNDS, PER_ROUND = 24, 40
PAUSE_S = 0.25

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def _flowcept(*args, **kw):
    return [sys.executable, "-m", "flowcept", *args]


class Keepers:
    """Keeper processes, each writing PARENT/<dir>, logs in PARENT/../logs."""

    def __init__(self, tmp_path, url, options):
        self.parent = str(tmp_path / "prov")
        self.logs = str(tmp_path / "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.url = url
        self.options = options
        self.procs = {}
        self.dirs = {}

    def start(self, name, dirname, peers):
        d = os.path.join(self.parent, dirname)
        args = _flowcept("keeper", "run", "--url", self.url, "--store-dir", d, "--name", name,
                         "--count", "4", "--claim-idle-ms", "500", "--exit-when-idle", "5",
                         "--status-interval", "0.2", *self.options)
        if peers:
            args += ["--peer-store", self.parent]
        out = open(os.path.join(self.logs, f"{name}.log"), "w")
        self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.dirs[name] = d

    def status(self, name):
        path = os.path.join(self.dirs[name], f"{STATUS_PREFIX}{name}{STATUS_SUFFIX}")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def wait_stored(self, name, timeout=120):
        deadline = time.monotonic() + timeout
        while self.status(name).get("batches_in", 0) < 1:
            assert self.procs[name].poll() is None, self.log(name)
            assert time.monotonic() < deadline, f"keeper {name} stored nothing in {timeout}s"
            time.sleep(0.05)

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def wait_all(self, timeout=180):
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            try:
                p.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"keeper {name} did not go idle: {self.log(name)}")

    def log(self, name):
        with open(os.path.join(self.logs, f"{name}.log")) as f:
            return f.read()[-3000:]

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def _work_keys(docs):
    """Counter of (rank, i) of the work tasks in Flowcept-style documents."""
    c = collections.Counter()
    for d in docs:
        if d.get("activity_id") == "work":
            used = d["used"]
            c[(int(used["rank"]), int(used["i"]))] += 1
    return c


def _check_exactly_once(counter, where):
    want = {(r, i) for r in range(len(NODES) * RANKS_PER_NODE) for i in range(ROUNDS * PER_ROUND)}
    twice = {k: n for k, n in counter.items() if n > 1}
    assert not twice, f"{where}: {len(twice)} tasks more than once, e.g. {list(twice.items())[:3]}"
    missing = want - set(counter)
    assert not missing, f"{where}: {len(missing)} tasks missing, e.g. {sorted(missing)[:3]}"
    assert set(counter) == want, where


def _archive_docs(h5):
    """(activity, used, hostname) of every row of the archive, read with
    plain h5py + numpy + msgpack (docs/archive-format.md)."""
    import h5py
    import msgpack
    with h5py.File(h5, "r") as f:
        strings = f["strings"].asstr()[()]
        t = f["tasks"]
        act, node = t["activity"][()], t["node"][()]
        off, n = t["payload_off"][()], t["payload_len"][()]
        blob = f["payloads"][()]
    return [{"activity_id": strings[a], "hostname": strings[h],
             "used": msgpack.unpackb(blob[o:o + k].tobytes(), raw=False).get("used")}
            for a, h, o, k in zip(act.tolist(), node.tolist(), off.tolist(), n.tolist())]


def _query_cli(path):
    r = subprocess.run(_flowcept("query", path, "-f", '{"activity_id": "work"}', "-p",
                                 "activity_id,used,hostname", "--all", "--format", "jsonl",
                                 "--query-timeout", "240"),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]


def _query_http(path, tmp_path):
    from support.redis_server import free_port
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    p = subprocess.Popen(_flowcept("serve", path, "--port", str(port), "--query-timeout", "240"),
                         stdout=log,
                         stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        q = urllib.parse.urlencode({"filter": '{"activity_id": "work"}',
                                    "projection": "activity_id,used,hostname"})
        with urllib.request.urlopen(f"{base}/api/v1/tasks/stream?{q}", timeout=300) as r:
            return [json.loads(ln) for ln in r.read().decode().splitlines() if ln.strip()]
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)


def _ensure_doubled(parent, old, others, n=4):
    """Makes sure some batches are in the old directory of a keeper replaced
    without peers and in another directory, as a kill between the old
    keeper's commit and its acknowledgement leaves them (the kill lands
    there only sometimes): copies up to n batches of the other directories
    (the replacement's first) into the old one.  Returns how many batch ids
    the run itself doubled."""
    from flowcept.config import load_config
    from flowcept.store import open_store
    where = _batch_dirs(parent, [old] + others)
    natural = sum(1 for d in where.values() if len(d) > 1)
    items = []
    for other in others:
        for sd in store_dirs_at(os.path.join(parent, other)):
            with open_store_at(sd) as st:
                items += [(bytes(k), bytes(f)) for k, f in st.scan()][:n - len(items)]
        if len(items) >= n:
            break
    with open_store("lmdb", os.path.join(parent, old), load_config(env={})) as st:
        st.put_batches(items)
    doubled = sum(1 for d in _batch_dirs(parent, [old] + others).values() if len(d) > 1)
    assert doubled >= n, doubled
    return natural


def _batch_dirs(parent, names):
    """batch key -> [store dirs holding it], over the given keeper dirs."""
    where = collections.defaultdict(list)
    for d in names:
        for sd in store_dirs_at(os.path.join(parent, d)):
            with open_store_at(sd) as st:
                for key, _ in st.summaries():
                    where[bytes(key)].append(d)
    return where


@pytest.fixture
def hub(request, tmp_path):
    """(url, keeper options, env for the job) of two Redis shards or a 4-partition Kafka."""
    ok, why = nodes_available()
    if not ok:
        pytest.skip(why)
    if request.param == "redis-shards":
        from support.redis_server import RedisServer, redis_available
        ok, why = redis_available()
        if not ok:
            pytest.skip(why)
        a, b = RedisServer(tmp_path / "ra"), RedisServer(tmp_path / "rb")
        try:
            yield f"{a.url},{b.url}", [], {}
        finally:
            a.stop()
            b.stop()
    else:
        from support.kafka_server import KafkaServer, kafka_available
        ok, why = kafka_available()
        if not ok:
            pytest.skip(why)
        k = KafkaServer(tmp_path / "kafka")
        opts = ["-o", "kafka_partitions=4", "-o", "kafka_session_timeout_ms=3000",
                "-o", f"kafka_group=g-{uuid.uuid4().hex[:8]}"]
        try:
            yield k.url(f"t-{uuid.uuid4().hex[:8]}"), opts, {"FLOWCEPT_KAFKA_PARTITIONS": "4"}
        finally:
            k.stop()


@pytest.mark.parametrize("hub", ["redis-shards", "kafka-partitions"], indirect=True)
def test_four_nodes_three_keepers_killed_and_moved_exactly_once(hub, tmp_path):
    url, options, job_env = hub
    keepers = Keepers(tmp_path, url, options)
    job = None
    t_start = time.monotonic()
    try:
        keepers.start("ka", "keeper-a", peers=True)
        keepers.start("kb", "keeper-b", peers=False)
        keepers.start("kc", "keeper-c", peers=True)
        env = {"FLOWCEPT_TRANSPORT": url.split("://", 1)[0], "FLOWCEPT_TRANSPORT_URL": url,
               "FLOWCEPT_BATCH_RECORDS": "128", "FLOWCEPT_BATCH_LATENCY_MS": "100",
               "FLOWCEPT_JOB_ID": "multinode",
               "FLOWCEPT_RUN_DIR": str(tmp_path / "runs"), "PYTHONPATH": ROOT, **job_env}
        job = NodeJob(tmp_path / "job", NODES, RANKS_PER_NODE,
                      [sys.executable, APP, "--rounds", str(ROUNDS), "--per-round", str(PER_ROUND),
                       "--pause", str(PAUSE_S)], env=env, cwd=ROOT).start()
        keepers.wait_stored("ka")
        keepers.kill("ka")                       # replaced in another directory, seeing the old
        keepers.start("ka2", "keeper-a2", peers=True)
        keepers.wait_stored("kb")
        keepers.kill("kb")                       # replaced where the old one cannot be seen
        keepers.start("kb2", "keeper-b2", peers=False)
        rc, out, err = job.wait(timeout=300)
        assert rc == 0, f"{out}\n{err}"
        print(f"job: {time.monotonic() - t_start:.1f} s")
        keepers.wait_all()
        print(f"keepers idle: {time.monotonic() - t_start:.1f} s")
    finally:
        if job is not None:
            job.kill()
        keepers.close()
    # the job really ran on four nodes, two ranks each, one leader per node
    seen = [dict(kv.split("=") for kv in ln.split()) for ln in out.splitlines()
            if ln.startswith("rank=")]
    per_node = collections.Counter(s["node"] for s in seen)
    assert per_node == {n: RANKS_PER_NODE for n in NODES}, out
    assert sorted(s["node_rank"] for s in seen) == ["0"] * len(NODES) + ["1"] * len(NODES)
    # the keepers that see each other stored no batch twice
    where = _batch_dirs(keepers.parent, ["keeper-a", "keeper-a2", "keeper-c"])
    doubled = {k.hex(): d for k, d in where.items() if len(d) > 1}
    assert not doubled, f"batches in two directories of peer keepers: {doubled}"
    # the no-peer recipe leaves batches in both directories: readers must drop them
    natural = _ensure_doubled(keepers.parent, "keeper-b", ["keeper-b2", "keeper-c", "keeper-a2"])
    print(f"batches doubled by the kill of keeper b itself: {natural}")
    # every way in: flowcept query, flowcept serve (HTTP), the archive
    t0 = time.monotonic()
    docs = _query_cli(keepers.parent)
    print(f"query: {time.monotonic() - t0:.1f} s")
    _check_exactly_once(_work_keys(docs), "flowcept query")
    assert {d["hostname"] for d in docs} == set(NODES)
    t0 = time.monotonic()
    _check_exactly_once(_work_keys(_query_http(keepers.parent, tmp_path)), "flowcept serve")
    print(f"serve: {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    h5 = str(tmp_path / "multinode.h5")
    r = subprocess.run(_flowcept("compact", keepers.parent, "-o", h5), capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    print(f"compact: {time.monotonic() - t0:.1f} s")
    _check_exactly_once(_work_keys(_archive_docs(h5)), "the archive (h5py)")
    t0 = time.monotonic()
    _check_exactly_once(_work_keys(_query_cli(h5)), "the archive (flowcept query)")
    print(f"query the archive: {time.monotonic() - t0:.1f} s")
