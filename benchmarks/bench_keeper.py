"""Keeper and Redis benchmarks.

    python benchmarks/bench_keeper.py scale --keepers 1 2 4 --hub redis kafka
    python benchmarks/bench_keeper.py ingest --frames 120 --records-per-frame 16384
    python benchmarks/bench_keeper.py e2e --ranks 4 --records 2000000 --mode raw decorated
    python benchmarks/bench_keeper.py reference --records 20000     # flowcept 1.0.3, same machine
    python benchmarks/bench_keeper.py all                          # the three, one JSON line each

ingest: a redis-server (started here, free port) is pre-filled with real
frames (packed by the C packer from a ring: 16,384 task records of 64 B
plus a 21-byte msgpack payload each); then a keeper (in this process)
reads, validates, writes them to LMDB (``--shards``) and acknowledges.
The clock runs from keeper start to the last record committed.

e2e: ``mpiexec -n R`` workers instrumented with FLOWCEPT_TRANSPORT=redis:
each rank pushes its share in a tight loop (``raw``: one cffi ring push per
record; ``decorated``: ``@flowcept_task`` calls of a two-kwarg function),
the node leader packs batches and XADDs them to Redis, a keeper (thread of
this process) writes LMDB.  Clock: from the ranks' barrier before the first
push until the keeper has committed the last record.

scale: keeper processes (1, 2, 4: ``--keepers``) reading one hub (a
redis-server, or a Tansu topic with ``--partitions`` partitions) into their
own LMDB directories, warm: each keeper process opens its sources, joins
its group and stores ``--warm-frames`` frames first; then the keepers
pause, ``--frames`` real frames are loaded into the hub (spread over 8
node names, so over every partition), and the clock runs from "go" to the
last record committed.  Reported per keeper count: records/s, speed-up
over one keeper, keeper CPU-s per million records (user + system of the
keeper processes over the measured interval: independent of how many
cores there are) and the hub server's CPU-s per million records, plus the
load average before and after (the machine is shared).

reference: benchmarks/reference/ref_end_to_end.py (flowcept 1.0.3:
decorated calls -> Redis -> its consumer -> its LMDB) in its own venv.
Prints one JSON line per measurement.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def real_frames(n_frames, per_frame, workdir):
    """n_frames frames of per_frame records, packed in C from a ring."""
    from flowcept.native import ffi, lib
    from flowcept.config import load_config
    from flowcept.native.ring import Ring
    cfg = load_config(env={}, ring_bytes=1 << 26)
    path = os.path.join(workdir, f"bench-{time.time_ns()}.ring")
    ring = Ring.create(path, cfg, 42, 7, 0)
    ring.intern("host:bench")
    aid = ring.intern("f")
    payload = b"\x82\xa4used\x82\xa1x\x01\xa1y\x02\xa9generated\x80"
    cap = 1 << 24
    buf = ffi.new("char[]", cap)
    consumed = ffi.new("uint64_t *")
    frames = []
    push = lib.fc_ring_push_task
    tid = 0
    for _ in range(n_frames):
        for _ in range(per_frame):
            tid += 1
            push(ring.handle, tid, 0, 7, tid, tid + 5, 0, 0, aid, 0, 1, payload, len(payload))
        n = lib.fc_ring_pack(ring.handle, buf, cap, per_frame, consumed)
        frame = bytes(ffi.buffer(buf, n))
        hdr = ffi.cast("fc_batch_header *", buf)
        lib.fc_ring_release(ring.handle, hdr.seq + consumed[0])
        frames.append(frame)
    ring.close()
    os.unlink(path)
    return frames


def wait_count(keeper, want, timeout):
    deadline = time.monotonic() + timeout
    while keeper.counts["records_in"] < want:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def bench_ingest(args):
    from support.redis_server import RedisServer
    from flowcept.native.batch import Batch
    from flowcept.config import load_config
    from flowcept.keeper import Keeper
    work = tempfile.mkdtemp(prefix="bench-keeper-")
    frames = real_frames(args.frames, args.records_per_frame, work)
    total = sum(len(Batch(f)) for f in frames)
    with RedisServer(os.path.join(work, "redis")) as srv:
        c = srv.client()
        from flowcept.native.batch import Batch as B
        pipe = c.pipeline(transaction=False)
        for i, f in enumerate(frames):
            pipe.xadd("flowcept", {b"f": f, b"key": B(f).key, b"job": b"bench", b"node": b"n"})
            if i % 16 == 15:
                pipe.execute()
        pipe.execute()
        cfg = load_config(env={}, transport="redis", transport_url=srv.url,
                          store_dir=os.path.join(work, "store"), lmdb_shards=args.shards)
        k = Keeper(cfg, name="bench", count=args.count, status_interval=5)
        th = threading.Thread(target=k.run)
        t0 = time.perf_counter()
        th.start()
        ok = wait_count(k, total, 600)
        t1 = time.perf_counter()
        k.stop()
        th.join()
    out = {"bench": "keeper_ingest", "frames": len(frames), "records": total,
           "frame_bytes": len(frames[0]), "shards": args.shards, "count": args.count,
           "stored": k.counts["records_in"], "ok": ok, "seconds": round(t1 - t0, 3),
           "records_per_s": round(total / (t1 - t0)), "MB_per_s": round(
               sum(map(len, frames)) / (t1 - t0) / 1e6, 1)}
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


def worker(args):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    from flowcept.mpi import instrument
    from bench_pipeline import produce      # same producer loop as the embedded benchmark
    prov = instrument(comm, workflow_name="bench-keeper")
    n = args.records // comm.Get_size()
    t0 = produce(prov, args.mode, n, clock=time.time)   # wall clock: the keeper is another process
    t_push = time.time() - t0
    prov.finalize()
    t_push = comm.reduce(t_push, op=MPI.MAX, root=0)
    if comm.Get_rank() == 0:
        sys.stdout.write(json.dumps({"t0": t0, "push_s": t_push, "records": n * comm.Get_size()})
                         + "\n")
        sys.stdout.flush()


def bench_e2e(args, mode):
    from support.redis_server import RedisServer
    from flowcept.config import load_config
    from flowcept.keeper import Keeper
    work = tempfile.mkdtemp(prefix="bench-e2e-")
    n = args.records // args.ranks * args.ranks
    with RedisServer(os.path.join(work, "redis")) as srv:
        cfg = load_config(env={}, transport="redis", transport_url=srv.url,
                          store_dir=os.path.join(work, "store"), lmdb_shards=args.shards)
        k = Keeper(cfg, name="bench", count=args.count, status_interval=5)
        th = threading.Thread(target=k.run)
        th.start()
        env = dict(os.environ, FLOWCEPT_TRANSPORT="redis", FLOWCEPT_TRANSPORT_URL=srv.url,
                   FLOWCEPT_RUN_DIR=os.path.join(work, "runs"), PYTHONPATH=ROOT)
        done = {}

        def watch():
            # n task records, plus the 2 workflow records rank 0 writes (start, end)
            if wait_count(k, n, 900):
                done["t"] = time.time()
            if wait_count(k, n + 2, 30):
                done["t"] = time.time()

        w = threading.Thread(target=watch)
        w.start()
        r = subprocess.run(["mpiexec", "-n", str(args.ranks), sys.executable, __file__, "worker",
                            "--records", str(n), "--mode", mode],
                           capture_output=True, text=True, timeout=900, env=env)
        w.join()
        k.stop()
        th.join()
    if r.returncode != 0:
        raise SystemExit(f"workers failed:\n{r.stdout}\n{r.stderr}")
    info = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    secs = done.get("t", time.time()) - info["t0"]
    out = {"bench": "e2e_redis", "mode": mode, "ranks": args.ranks, "records": n,
           "stored": k.counts["records_in"], "batches": k.counts["batches_in"],
           "push_s": round(info["push_s"], 3), "seconds": round(secs, 3),
           "records_per_s": round(n / secs)}
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


def bench_reference(args):
    try:
        py = subprocess.run(["bash", os.path.join(HERE, "reference", "setup_ref_venv.sh")],
                            capture_output=True, text=True, timeout=600, check=True).stdout.split()[-1]
        r = subprocess.run([py, os.path.join(HERE, "reference", "ref_end_to_end.py"),
                            str(args.ref_records)], capture_output=True, text=True, timeout=900)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    except Exception as e:
        out = {"bench": "reference", "error": str(e)[:300]}
        print(json.dumps(out), flush=True)
        return out
    out = {"bench": "reference", **json.loads(line)}
    print(json.dumps(out), flush=True)
    return out


# -- scale: keeper processes, warm ------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keeper_proc(args):
    """One keeper process of ``scale``: warm, paused, then measured.
    stdin: "pause" / "go" lines; stdout: "ready" / "paused" / one JSON line."""
    import resource
    from flowcept.config import load_config
    from flowcept.keeper import Keeper
    cfg = load_config(env={}, transport=args.hub, transport_url=args.url,
                      store_dir=args.store_dir, kafka_group=args.group,
                      kafka_partitions=args.partitions)
    gate = threading.Event()
    gate.set()
    mark = {}

    class GatedKeeper(Keeper):
        def handle(self, src, entries):
            gate.wait()
            ok = super().handle(src, entries)
            if "go" in mark:
                mark["t_last"] = time.time()
                mark["cpu_last"] = _cpu(resource)
            return ok
    k = GatedKeeper(cfg, name=args.name, count=args.count, status_interval=0.05)
    th = threading.Thread(target=k.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 120
    while not k.sources and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "pause":
            gate.clear()
            print("paused", flush=True)
        elif cmd == "go":
            mark["records0"] = k.counts["records_in"]
            mark["go"] = time.time()
            mark["cpu0"] = _cpu(resource)
            gate.set()
        elif cmd == "stop":
            break
    k.stop()
    th.join()
    print(json.dumps({"name": args.name, "records": k.counts["records_in"] - mark.get("records0", 0),
                      "t_go": mark.get("go"), "t_last": mark.get("t_last"),
                      "cpu_s": mark.get("cpu_last", 0) - mark.get("cpu0", 0)}), flush=True)


def _cpu(resource) -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _status_records(dirs) -> int:
    from flowcept.keeper import read_status
    return sum(read_status(d)["totals"]["records_in"] for d in dirs if os.path.isdir(d))


class _Hub:
    """A redis-server or a Tansu broker, and how to load frames into it."""

    def __init__(self, kind, work, partitions):
        self.kind = kind
        self.partitions = partitions
        self.topic = "scale"
        if kind == "redis":
            from support.redis_server import RedisServer
            self.srv = RedisServer(os.path.join(work, "redis"))
            self.url = self.srv.url
        else:
            from support.kafka_server import KafkaServer
            self.srv = KafkaServer(os.path.join(work, "kafka"))
            self.url = self.srv.url(self.topic)
        self.pid = self.srv.proc.pid

    def load(self, frames, nodes=8):
        """Publishes the frames through the transport, spread over `nodes` node names."""
        from flowcept.config import load_config
        from flowcept.native.batch import Batch
        from flowcept.record.job import JobInfo
        from flowcept.transport import open_transport
        cfg = load_config(env={}, transport=self.kind, transport_url=self.url,
                          kafka_partitions=self.partitions)
        tr = open_transport(self.kind, cfg, JobInfo("bench", 7, "nid000000", ""))
        for i, f in enumerate(frames):
            tr.publish(Batch(f, check=False).key, f,
                       job=JobInfo("bench", 7, f"nid{i % nodes:06d}", ""))
        tr.flush()
        tr.close()

    def close(self):
        self.srv.stop()


def scale_one(args, hub_kind, n_keepers, frames, warm, work):
    dirs = [os.path.join(work, f"{hub_kind}-{n_keepers}", f"k{i}") for i in range(n_keepers)]
    hub = _Hub(hub_kind, os.path.join(work, f"{hub_kind}-{n_keepers}-srv"), args.partitions)
    procs = []
    group = f"g{n_keepers}-{time.time_ns()}"
    try:
        if hub_kind == "kafka":
            hub.load(warm[:1])           # the topic exists before the keepers join
        for i in range(n_keepers):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "keeper-proc", "--hub", hub_kind, "--url", hub.url,
                 "--store-dir", dirs[i], "--name", f"k{i}", "--group", group,
                 "--partitions", str(args.partitions), "--count", str(args.count)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=ROOT)))
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        hub.load(warm)                   # warm: connections up, group joined, first commits
        want = len(warm) * args.records_per_frame     # warm[0] twice for Kafka: stored once
        deadline = time.monotonic() + 300
        while _status_records(dirs) < want:
            if time.monotonic() > deadline:
                raise SystemExit(f"warm-up: {_status_records(dirs)} of {want} records stored")
            time.sleep(0.05)
        for p in procs:
            p.stdin.write("pause\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "paused"
        hub.load(frames)
        load0 = os.getloadavg()[0]
        hub_cpu0 = proc_cpu_s(hub.pid)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        total = len(frames) * args.records_per_frame
        deadline = time.monotonic() + 600
        while _status_records(dirs) < want + total:
            if time.monotonic() > deadline:
                raise SystemExit(f"{_status_records(dirs) - want} of {total} records stored")
            time.sleep(0.05)
        hub_cpu = proc_cpu_s(hub.pid) - hub_cpu0
        outs = []
        for p in procs:
            p.stdin.write("stop\n")
            p.stdin.flush()
            outs.append(json.loads(p.stdout.readline()))
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        hub.close()
    t_go = min(o["t_go"] for o in outs)
    secs = max(o["t_last"] for o in outs if o["t_last"]) - t_go
    cpu = sum(o["cpu_s"] for o in outs)
    return {"bench": "keeper_scale", "hub": hub_kind, "keepers": n_keepers,
            "partitions": args.partitions if hub_kind == "kafka" else None,
            "records": total, "per_keeper": [o["records"] for o in outs],
            "seconds": round(secs, 3), "records_per_s": round(total / secs),
            "keeper_cpu_s_per_M": round(cpu / total * 1e6, 3),
            "keeper_cores_used": round(cpu / secs, 2),
            "hub_cpu_s_per_M": round(hub_cpu / total * 1e6, 3),
            "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def bench_scale(args):
    work = tempfile.mkdtemp(prefix="bench-scale-")
    try:
        results = []
        for hub in args.hub:
            one = None
            for n in args.keepers:
                # a new ring per run (its uid is random): every run stores new batches
                frames = real_frames(args.frames + args.warm_frames, args.records_per_frame, work)
                out = scale_one(args, hub, n, frames[args.warm_frames:],
                                frames[:args.warm_frames], work)
                one = one or out["records_per_s"]
                out["speedup"] = round(out["records_per_s"] / one, 2)
                print(json.dumps(out), flush=True)
                results.append(out)
        return results
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("ingest", "e2e", "reference", "all", "worker", "scale",
                                     "keeper-proc"))
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--records-per-frame", type=int, default=16384)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--count", type=int, default=8, help="keeper entries per read")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--mode", nargs="+", default=["raw", "decorated"])
    ap.add_argument("--ref-records", type=int, default=20000)
    ap.add_argument("--keepers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--hub", nargs="+", default=["redis"], help="scale: redis and/or kafka "
                    "(keeper-proc: one)")
    ap.add_argument("--warm-frames", type=int, default=8)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--url")
    ap.add_argument("--store-dir")
    ap.add_argument("--name")
    ap.add_argument("--group")
    args = ap.parse_args()
    if args.what == "keeper-proc":
        args.hub = args.hub[0]
        return keeper_proc(args)
    if args.what == "scale":
        return bench_scale(args)
    if args.what == "worker":
        args.mode = args.mode[0]
        return worker(args)
    results = []
    if args.what in ("ingest", "all"):
        results.append(bench_ingest(args))
    if args.what in ("e2e", "all"):
        for mode in args.mode:
            results.append(bench_e2e(args, mode))
    if args.what in ("reference", "all"):
        ref = bench_reference(args)
        ours = [r for r in results if r.get("bench") == "e2e_redis"]
        if ours and ref.get("records_per_s"):
            for r in ours:
                print(json.dumps({"bench": "ratio_vs_flowcept_1.0.3", "mode": r["mode"],
                                  "ratio": round(r["records_per_s"] / ref["records_per_s"], 1)}),
                      flush=True)


if __name__ == "__main__":
    main()
