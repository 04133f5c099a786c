#!/usr/bin/env python3
"""Added cost of ``@flowcept_task`` on a call with a 1 MiB numpy argument.

    python benchmarks/bench_numpy_capture.py
    python benchmarks/bench_numpy_capture.py --tree /tmp/before --tree . --rounds 5
    python benchmarks/bench_numpy_capture.py --small      # also a 1,000-element array (statistics)

The call is heat2d's ``diffuse(step, u, alpha)`` with ``u`` a 128 x 1024
float64 array (1 MiB, more than numpy_stats_max elements: recorded by dtype,
shape and size), default configuration (4 MiB ring) but value_descriptions
"rich" (summary mode; --descriptions flowcept: Flowcept's text), one
``with Flowcept(...)`` per run.  Each run times --calls calls plainly,
--calls calls decorated and --calls decorated calls with u=0 (the same
record without the array: what the array itself adds is the difference),
--repeats times alternately; the figure is min decorated - min plain, per
call, by the wall clock and by the calling thread's CPU time
(time.thread_time_ns: what the machine's other load does not enter; the
drain thread's work is not in it).  Every record is counted in the store
afterwards.  Each --tree (a checkout with its extensions built in place) runs
in its own subprocess with PYTHONPATH set to it; trees alternate, --rounds
times, so that the machine's load drifts over all of them alike.  Modes: the
compiled wrapper and, with --pure, the pure-Python one.

Prints one JSON line per run and a summary (min and max over the rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def child(calls: int, repeats: int, elements: int) -> dict:
    import numpy as np
    from flowcept import Flowcept, flowcept_task
    from flowcept.query.tasks import read_records

    u = np.zeros((elements // 1024, 1024)) if elements >= 1024 else np.linspace(0.0, 1.0, elements)

    def diffuse(step, u, alpha):
        return 0.5

    decorated = flowcept_task(diffuse)
    perf = time.perf_counter_ns
    cpu = time.thread_time_ns     # the calling thread's CPU: robust to a loaded machine
    rng = range(calls)

    cpu_of = {}

    def per_call(fn, arg=u):
        c0, t0 = cpu(), perf()
        for i in rng:
            fn(i, arg, 0.1)
        t, c = (perf() - t0) / calls, (cpu() - c0) / calls
        key = (fn, type(arg))
        cpu_of[key] = min(cpu_of.get(key, c), c)
        return t

    with Flowcept(workflow_name="bench-numpy-capture") as fc:
        for _ in range(2):                     # warm-up: caches, dtype names, branch predictors
            per_call(diffuse)
            per_call(decorated)
            per_call(decorated, 0)
        plain, deco, scalar = [], [], []
        for _ in range(repeats):
            plain.append(per_call(diffuse))
            deco.append(per_call(decorated))
            scalar.append(per_call(decorated, 0))
        run_dir = fc.run_dir if hasattr(fc, "run_dir") else None
    stored = None
    if run_dir is None:
        run_dir = os.environ.get("FLOWCEPT_RUN_DIR")
    try:
        stored = len(read_records(run_dir).records)
    except Exception as e:   # the count is informative; the timing stands without it
        stored = f"unreadable: {type(e).__name__}: {e}"
    return {"wrapper": type(decorated).__name__, "plain_ns": round(min(plain), 1),
            "decorated_ns": round(min(deco), 1), "added_ns": round(min(deco) - min(plain), 1),
            "added_scalar_ns": round(min(scalar) - min(plain), 1),
            "added_cpu_ns": round(cpu_of[(decorated, type(u))] - cpu_of[(diffuse, type(u))], 1),
            "added_scalar_cpu_ns": round(cpu_of[(decorated, int)] - cpu_of[(diffuse, type(u))], 1),
            "calls_decorated": 2 * (2 + repeats) * calls, "records_stored": stored}


def run_tree(tree: str, args, pure: bool) -> dict:
    tmp = tempfile.mkdtemp(prefix="fcbench-np-")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), FLOWCEPT_RUN_DIR=tmp,
               FLOWCEPT_VALUE_DESCRIPTIONS=args.descriptions)
    env.pop("FLOWCEPT_PURE_PYTHON", None)
    if pure:
        env["FLOWCEPT_PURE_PYTHON"] = "1"
    try:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                              "--calls", str(args.calls), "--repeats", str(args.repeats),
                              "--elements", str(args.elements)],
                             env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not lines:
        return {"tree": tree, "error": out.stderr[-2000:]}
    r = json.loads(lines[-1])
    r.update(tree=tree, pure=pure, elements=args.elements)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="checkout to measure (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--elements", type=int, default=128 * 1024, help="float64 elements of u")
    ap.add_argument("--pure", action="store_true", help="also the pure-Python wrapper")
    ap.add_argument("--descriptions", choices=("rich", "flowcept"), default="rich",
                    help="value_descriptions: rich (the array's summary, measured so far) or "
                         "flowcept (the default configuration: Flowcept's text)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.calls, args.repeats, args.elements)), flush=True)
        return
    trees = args.tree or [ROOT]
    modes = [False, True] if args.pure else [False]
    results = []
    for _ in range(args.rounds):
        for tree in trees:
            for pure in modes:
                r = run_tree(tree, args, pure)
                print(json.dumps(r), flush=True)
                results.append(r)
    print(f"\nadded ns per call, {args.elements} float64 elements, min..max over {args.rounds} rounds:")
    for tree in trees:
        for pure in modes:
            mine = [r for r in results if r.get("tree") == tree and r.get("pure") == pure
                    and "added_ns" in r]
            kind = "pure" if pure else "compiled"
            if mine:
                for what, key in (("wall", "added_ns"), ("thread CPU", "added_cpu_ns")):
                    got = [r[key] for r in mine]
                    ref = [r[key.replace("added_", "added_scalar_")] for r in mine]
                    print(f"  {tree} [{kind}] {what}: {min(got):.0f} .. {max(got):.0f}"
                          f"   (same call with u=0: {min(ref):.0f} .. {max(ref):.0f})")


if __name__ == "__main__":
    main()
