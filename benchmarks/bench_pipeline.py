"""End-to-end pipeline benchmarks (issue 3): ranks -> node leader -> embedded LMDB.

    python benchmarks/bench_pipeline.py throughput --ranks 4 --records 2000000
    python benchmarks/bench_pipeline.py overhead --ranks 1 4 8

throughput: every rank pushes its share of records as fast as Python can
call the ring (`raw`: one cffi call per record, the floor of the pipeline)
or through @flowcept_task (`decorated`); the clock runs from a barrier
before the first push until the leader has committed the last record to
LMDB.  The leader's RSS is sampled while it drains.
overhead: examples/heat2d.py with capture on vs --no-capture, wall time
ratio (min of repeats), tasks of about a millisecond.
Prints one JSON line per measurement.
"""
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def produce(prov, mode: str, n: int, clock=time.perf_counter) -> float:
    """Pushes n records from this rank after a barrier, either `raw` (one cffi
    ring push per record) or `decorated` (@flowcept_task f(x=1, y=2));
    returns clock() at the start.  Shared with bench_keeper.py."""
    comm, s = prov.comm, prov.session
    if mode == "raw":
        from flowcept.native import lib
        push, h, wf, rank = lib.fc_ring_push_task, s.handle, s.workflow_id, s.rank
        aid = s.activity_id("raw")
        payload = b"\x82\xa4used\x82\xa1x\x01\xa1y\x02\xa9generated\x80"
        base = s.origin_bits
        comm.Barrier()
        t0 = clock()
        for i in range(1, n + 1):
            push(h, base | i, 0, wf, i, i + 1, rank, 0, aid, 0, 1, payload, len(payload))
        return t0

    @prov.task
    def f(x, y):
        return None
    comm.Barrier()
    t0 = clock()
    for _ in range(n):
        f(x=1, y=2)
    return t0


def worker(args):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    from flowcept.mpi import instrument
    prov = instrument(comm, workflow_name="bench")
    n = args.records // comm.Get_size()
    t0 = produce(prov, args.mode, n)
    t_push = time.perf_counter() - t0
    spilled = prov.session.stats()["spilled"]
    drainer = prov.session.drainer
    prov.finalize()          # leader: drains everything into LMDB and commits
    t_all = time.perf_counter() - t0
    spilled = comm.reduce(spilled, op=MPI.SUM, root=0)
    # the leader process reports its own CPU time (the thread leader's is the rank's)
    leader_cpu = comm.reduce(getattr(drainer, "cpu_s", None) if drainer is not None else None,
                             op=lambda a, b: a if a is not None else b, root=0)
    leader_start = comm.reduce(getattr(drainer, "start_cpu_s", None) if drainer else None,
                               op=lambda a, b: a if a is not None else b, root=0)
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading back
    t_all = comm.reduce(t_all, op=MPI.MAX, root=0)
    t_push = comm.reduce(t_push, op=MPI.MAX, root=0)
    if comm.Get_rank() == 0:
        from flowcept.query.tasks import read_records
        stored = len(read_records(prov.run_dir).records)
        print(json.dumps({"bench": "pipeline", "mode": args.mode, "ranks": comm.Get_size(),
                          "records": n * comm.Get_size(), "stored": stored,
                          "push_s": round(t_push, 3), "end_to_end_s": round(t_all, 3),
                          "records_per_s": round(n * comm.Get_size() / t_all),
                          "leader": prov.config.leader, "spilled": spilled,
                          "leader_cpu_s_per_M": (None if leader_cpu is None else
                                                 round(leader_cpu / (n * comm.Get_size() / 1e6), 3)),
                          "leader_start_cpu_s": leader_start and round(leader_start, 3),
                          "leader_maxrss_mib": round(maxrss, 1)}),
              flush=True)


def percall_worker(args):
    """Inside an mpiexec run: CPU time per call of a task shaped like heat2d's
    (step, a 1 MiB numpy array, a float), plain vs decorated."""
    import numpy as np
    from mpi4py import MPI
    from flowcept.mpi import instrument
    comm = MPI.COMM_WORLD
    u = np.zeros((128, 1024))

    def diffuse(step, u, alpha):
        return 0.5

    with instrument(comm, workflow_name="percall") as prov:
        task = prov.task(diffuse)
        cost = {}
        for fn, name in ((diffuse, "plain"), (task, "decorated")):
            best = float("inf")
            for _ in range(5):
                comm.Barrier()
                t = time.process_time()
                for i in range(args.calls):
                    fn(i, u, 0.1)
                best = min(best, (time.process_time() - t) / args.calls)
            cost[name] = best
    added = comm.gather(cost["decorated"] - cost["plain"], root=0)
    if comm.Get_rank() == 0:
        med = sorted(added)[len(added) // 2]
        print(json.dumps({"bench": "percall", "ranks": comm.Get_size(),
                          "leader": prov.config.leader,
                          "added_cpu_ns_per_task_median": round(med * 1e9),
                          # rank 0 leads its node: with the thread leader its process
                          # also runs the drain
                          "added_cpu_ns_per_task_leader_rank": round(added[0] * 1e9),
                          "overhead_pct_for_1ms_task": round(med / 1e-3 * 100, 3)}), flush=True)


def percall(args):
    for leader, ranks in itertools.product(args.leaders, args.ranks):
        tmp = tempfile.mkdtemp(prefix="fcbench-")
        env = dict(os.environ, FLOWCEPT_RUN_DIR=tmp, FLOWCEPT_LEADER=leader)
        out = subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, __file__, "percall-worker",
                              "--calls", str(args.calls)], env=env, capture_output=True, text=True,
                             timeout=1800)
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
        print(lines[-1] if lines else json.dumps({"error": out.stderr[-2000:]}), flush=True)


def c_throughput(args):
    """C API ranks (examples/c_producer.c, 2 records per step) drained live by
    `flowcept drain`: the pipeline without Python on the producer side."""
    exe = os.path.join(tempfile.mkdtemp(prefix="fcbench-"), "c_producer")
    subprocess.run(["make", "-C", os.path.join(ROOT, "csrc")], check=True, capture_output=True)
    subprocess.run(["gcc", "-O2", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "examples", "c_producer.c"),
                    os.path.join(ROOT, "csrc", "build", "libflowcept.a"), "-lpthread", "-o", exe],
                   check=True)
    for ranks in args.ranks:
        tmp = tempfile.mkdtemp(prefix="fcbench-")
        env = dict(os.environ, FLOWCEPT_RUN_DIR=tmp, FLOWCEPT_JOB_ID="cbench")
        idle = 0.2
        leader = subprocess.Popen([sys.executable, "-m", "flowcept", "drain", "cbench",
                                   "--exit-when-idle", str(idle)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        leader.stderr.readline()            # ready
        steps = args.records // ranks // 2
        t0 = time.perf_counter()
        subprocess.run(["mpiexec", "-n", str(ranks), exe, str(steps)], env=env, check=True,
                       capture_output=True, timeout=1800)
        t_push = time.perf_counter() - t0
        out, _ = leader.communicate(timeout=1800)
        # the leader waits `idle` seconds after the last ring ended before it exits
        t_all = time.perf_counter() - t0 - idle
        from flowcept.query.tasks import find_stores
        from flowcept.store import open_store
        stored = 0
        for sp in find_stores(os.path.join(tmp, "cbench")):
            with open_store("lmdb", sp, readonly=True) as st:
                stored += sum(s_["n"] for _, s_ in st.summaries())
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps({"bench": "pipeline", "mode": "c_api", "ranks": ranks,
                          "records": steps * ranks * 2, "stored": stored,
                          "push_s": round(t_push, 3), "end_to_end_s": round(t_all, 3),
                          "records_per_s": round(steps * ranks * 2 / t_all)}), flush=True)


def throughput(args):
    for mode, leader, ranks in itertools.product(args.modes, args.leaders, args.ranks):
        tmp = tempfile.mkdtemp(prefix="fcbench-")
        env = dict(os.environ, FLOWCEPT_RUN_DIR=tmp, FLOWCEPT_RING_BYTES=str(args.ring_bytes),
                   FLOWCEPT_LEADER=leader)
        cmd = ["mpiexec", "-n", str(ranks), sys.executable, __file__, "worker", "--mode", mode,
               "--records", str(args.records)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else json.dumps({"error": out.stderr[-2000:]}), flush=True)


def overhead(args):
    """Capture on vs off, runs alternated (off, on, off, on, ...) so that the
    machine's drift hits both alike; min and median of the loop times."""
    import re
    import statistics
    heat = os.path.join(ROOT, "examples", "heat2d.py")

    def run(ranks, extra):
        tmp = tempfile.mkdtemp(prefix="fcbench-")
        env = dict(os.environ, FLOWCEPT_RUN_DIR=tmp)
        cmd = ["mpiexec", "-n", str(ranks), sys.executable, heat, "--n", str(args.n),
               "--steps", str(args.steps)] + extra
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        shutil.rmtree(tmp, ignore_errors=True)
        m = re.search(r", ([0-9.]+) s \(loop ([0-9.]+) s\)", out.stdout)
        if not m:
            raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
        return float(m.group(1)), float(m.group(2))

    for ranks in args.ranks:
        runs = {"off": [], "on": []}
        for _ in range(args.repeats):
            runs["off"].append(run(ranks, ["--no-capture"]))
            runs["on"].append(run(ranks, []))
        loop = {k: [lp for _, lp in v] for k, v in runs.items()}
        total = {k: [t for t, _ in v] for k, v in runs.items()}
        med = {k: statistics.median(v) for k, v in loop.items()}
        print(json.dumps({
            "bench": "overhead", "ranks": ranks, "grid": args.n, "steps": args.steps,
            "repeats": args.repeats,
            "ms_per_timestep": round(med["off"] / args.steps * 1e3, 3),
            "loop_off_s": {"min": min(loop["off"]), "median": med["off"]},
            "loop_on_s": {"min": min(loop["on"]), "median": med["on"]},
            "overhead_pct_min": round((min(loop["on"]) / min(loop["off"]) - 1) * 100, 2),
            "overhead_pct_median": round((med["on"] / med["off"] - 1) * 100, 2),
            "final_drain_s_median": round(statistics.median(
                t - lp for t, lp in runs["on"]), 3),
            "total_overhead_pct_median": round(
                (statistics.median(total["on"]) / statistics.median(total["off"]) - 1) * 100, 2)}),
            flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--mode", default="raw")
    w.add_argument("--records", type=int, default=1_000_000)
    t = sub.add_parser("throughput")
    t.add_argument("--ranks", type=int, nargs="+", default=[1, 4])
    t.add_argument("--modes", nargs="+", default=["raw", "decorated"])
    t.add_argument("--records", type=int, default=2_000_000)
    t.add_argument("--ring-bytes", type=int, default=4 << 20)
    t.add_argument("--leaders", nargs="+", default=["process", "thread"],
                   help="leader kinds to compare side by side (default: both)")
    pw = sub.add_parser("percall-worker")
    pw.add_argument("--calls", type=int, default=20000)
    pc = sub.add_parser("percall", help="CPU cost per heat2d-shaped task inside mpiexec ranks")
    pc.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
    pc.add_argument("--leaders", nargs="+", default=["process", "thread"])
    pc.add_argument("--calls", type=int, default=20000)
    c = sub.add_parser("c", help="C API ranks drained live by `flowcept drain`")
    c.add_argument("--ranks", type=int, nargs="+", default=[1, 4])
    c.add_argument("--records", type=int, default=8_000_000)
    o = sub.add_parser("overhead")
    o.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
    o.add_argument("--n", type=int, default=1024)
    o.add_argument("--steps", type=int, default=200)
    o.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    {"worker": worker, "throughput": throughput, "overhead": overhead, "c": c_throughput,
     "percall": percall, "percall-worker": percall_worker}[args.cmd](args)


if __name__ == "__main__":
    main()
