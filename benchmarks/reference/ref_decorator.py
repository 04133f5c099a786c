#!/usr/bin/env python3
"""Added cost per call of flowcept 1.0.3's ``@flowcept_task`` (the reference implementation).

Run it with the reference venv's python (see setup_ref_venv.sh), never with ours:

    PY=$(benchmarks/reference/setup_ref_venv.sh | tail -n1)
    $PY benchmarks/reference/ref_decorator.py 200000

What it does: an empty function with two scalar kwargs, ``f(x=1, y=2)`` (``--case scalar``,
the default), or a heat2d-shaped ``diffuse(step, u, alpha)`` with ``u`` a 1 MiB float64 numpy
array returning 0.5 (``--case numpy``; 1.0.3 records the array as the string
``ndarray_instance_id_<id>``, its replace_non_serializable default), is called N times
plainly and N times through ``@flowcept_task`` inside a ``with Flowcept(...):`` workflow
context, in flowcept's default offline mode (its built-in default settings: no MQ, no DB;
records go to an in-memory buffer that is dumped to ``flowcept_buffer.jsonl`` on stop).
Each repeat times one plain loop and one decorated loop (a fresh workflow context per repeat,
so the buffer starts empty each time; starting/stopping the context is not timed). The
per-call time is the minimum over the repeats for each side; added = decorated - plain.
Runs in a temporary working directory so the buffer file and log land there.

Prints one JSON line:
    {"impl":"flowcept-1.0.3","case":..,"plain_ns":..,"decorated_ns":..,"added_ns":..,"calls":N,
     "records":N}
"""

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calls", nargs="?", type=int, default=200_000, help="calls per repeat (N)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; min per-call time is kept")
    ap.add_argument("--case", choices=("scalar", "numpy"), default="scalar",
                    help="scalar: f(x=1, y=2); numpy: diffuse(step, u, alpha), u 1 MiB float64")
    ap.add_argument("--keep-dir", action="store_true", help="keep the temporary working dir")
    args = ap.parse_args()
    n = args.calls

    # flowcept reads its settings at import time. Use its built-in defaults (offline,
    # no MQ) regardless of any ~/.flowcept/settings.yaml or MQ_* variables around.
    os.environ["FLOWCEPT_USE_DEFAULT"] = "true"
    os.environ.pop("FLOWCEPT_SETTINGS_PATH", None)

    workdir = tempfile.mkdtemp(prefix="ref-decorator-")
    old_cwd = os.getcwd()
    os.chdir(workdir)
    try:
        import flowcept
        from flowcept import Flowcept, flowcept_task
        from flowcept import configs

        assert flowcept.__version__ == "1.0.3", flowcept.__version__
        assert not configs.MQ_ENABLED and configs.DB_FLUSH_MODE == "offline"

        perf = time.perf_counter_ns
        rng = range(n)
        if args.case == "scalar":
            def f(x, y):
                pass

            @flowcept_task
            def g(x, y):
                pass

            def time_loop(fn, calls=rng):
                t0 = perf()
                for _ in calls:
                    fn(x=1, y=2)
                return (perf() - t0) / len(calls)
        else:
            import numpy as np
            u = np.zeros((128, 1024))   # 1 MiB of float64

            def diffuse(step, u, alpha):
                return 0.5

            f, g = diffuse, flowcept_task(diffuse)

            def time_loop(fn, calls=rng):
                t0 = perf()
                for i in calls:
                    fn(i, u, 0.1)
                return (perf() - t0) / len(calls)

        # Warm-up (not timed): a short run of each, inside a workflow context.
        with Flowcept(workflow_name="ref-decorator-warmup"):
            warm = range(min(n, 10_000))
            time_loop(f, warm)
            time_loop(g, warm)

        plain, decorated = [], []
        records = 0
        for rep in range(args.repeats):
            gc.collect()
            plain.append(time_loop(f))
            gc.collect()
            with Flowcept(workflow_name=f"ref-decorator-{rep}") as fc:
                decorated.append(time_loop(g))
                records = sum(1 for m in fc.buffer if m.get("type") == "task")
            if records != n:
                raise SystemExit(f"expected {n} task records in the buffer, found {records}")

        plain_ns = min(plain)
        decorated_ns = min(decorated)
        out = {
            "impl": "flowcept-1.0.3",
            "case": args.case,
            "plain_ns": round(plain_ns, 1),
            "decorated_ns": round(decorated_ns, 1),
            "added_ns": round(decorated_ns - plain_ns, 1),
            "calls": n,
            "repeats": args.repeats,
            "records": records,
        }
        print(json.dumps(out), flush=True)
        return 0
    finally:
        os.chdir(old_cwd)
        if args.keep_dir:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
