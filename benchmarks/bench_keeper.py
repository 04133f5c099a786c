"""Keeper and Redis benchmarks (issue 4).

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
    ring = Ring.create(os.path.join(workdir, "bench.ring"), cfg, 42, 7, 0)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("ingest", "e2e", "reference", "all", "worker"))
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--records-per-frame", type=int, default=16384)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--count", type=int, default=8, help="keeper entries per read")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--mode", nargs="+", default=["raw", "decorated"])
    ap.add_argument("--ref-records", type=int, default=20000)
    args = ap.parse_args()
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
