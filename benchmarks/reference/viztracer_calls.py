#!/usr/bin/env python3
"""Added cost per call of VizTracer (a C-level tracer of every Python call), the anchor of
the capture benchmarks.

Run it with the VizTracer venv's python (see setup_viztracer_venv.sh):

    PY=$(benchmarks/reference/setup_viztracer_venv.sh | tail -n1)
    $PY benchmarks/reference/viztracer_calls.py 200000
    $PY benchmarks/reference/viztracer_calls.py 20000 --case numpy --modes args

The same loops as bench_capture.py and ref_decorator.py: ``f(x=1, y=2)`` on an empty
function (``--case scalar``), or ``diffuse(step, u, alpha)`` returning 0.5 with ``u`` a 1 MiB
float64 array (``--case numpy``), called N times plainly and N times with the tracer running
(``VizTracer.start()`` before the timed loop, ``stop()`` after it; neither is timed). Modes:

- ``timing``: ``VizTracer(tracer_entries=..., verbose=0, register_global=False)``, its default
  tracer otherwise (every Python and C function call, entry and exit timestamps);
- ``args``: the same with ``log_func_args=True, log_func_retval=True`` (``repr()`` of every
  argument and of the return value, stored with the event).

``tracer_entries`` (the size of VizTracer's circular buffer) is 2 N + 1000, so a loop never
wraps it. After every repeat the events are parsed (``VizTracer.parse()``, not timed) and
counted: the events of the traced function must number exactly N (and, in ``args`` mode,
each carry ``func_args`` and ``return_value``), and the buffer must not have overflowed;
otherwise the script exits 1. ``clear()`` empties the buffer before the next repeat.
Per-call time = loop time / N, minimum over the repeats for each side;
``added_ns = traced_ns - plain_ns``.

Prints one JSON line per mode.
"""

import argparse
import gc
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calls", nargs="?", type=int, default=200_000, help="calls per repeat (N)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; min per-call time is kept")
    ap.add_argument("--case", choices=("scalar", "numpy"), default="scalar")
    ap.add_argument("--modes", nargs="+", choices=("timing", "args"), default=["timing", "args"])
    args = ap.parse_args()
    n = args.calls

    import viztracer
    from viztracer import VizTracer

    perf = time.perf_counter_ns
    rng = range(n)
    if args.case == "scalar":
        name = "f"

        def f(x, y):
            pass

        def time_loop(fn, calls=rng):
            t0 = perf()
            for _ in calls:
                fn(x=1, y=2)
            return (perf() - t0) / len(calls)
    else:
        import numpy as np
        u = np.zeros((128, 1024))   # 1 MiB of float64
        name = "diffuse"

        def diffuse(step, u, alpha):
            return 0.5

        f = diffuse

        def time_loop(fn, calls=rng):
            t0 = perf()
            for i in calls:
                fn(i, u, 0.1)
            return (perf() - t0) / len(calls)

    configs = {"timing": {}, "args": {"log_func_args": True, "log_func_retval": True}}
    entries = 2 * n + 1000
    failed = False
    for mode in args.modes:
        config = {"tracer_entries": entries, "verbose": 0, "register_global": False, **configs[mode]}
        tracer = VizTracer(**config)
        # warm-up (not timed, not checked)
        time_loop(f, range(min(n, 10_000)))
        tracer.start()
        time_loop(f, range(min(n, 10_000)))
        tracer.stop()
        tracer.clear()

        plain, traced, counts, totals = [], [], [], []
        overflow = False
        for _ in range(args.repeats):
            gc.collect()
            plain.append(time_loop(f))
            gc.collect()
            tracer.start()
            traced.append(time_loop(f))
            tracer.stop()
            total = tracer.parse()   # events in the buffer (metadata events not counted)
            # event names read "<qualname> (<file>:<line>)"
            events, others = [], {}
            for e in tracer.data["traceEvents"]:
                if e.get("ph") == "M":
                    continue
                func = e.get("name", "").split(" (")[0]
                if func == name or func.endswith("." + name):
                    events.append(e)
                else:
                    others[func] = others.get(func, 0) + 1
            if mode == "args":
                events = [e for e in events
                          if "func_args" in e.get("args", {}) and "return_value" in e.get("args", {})]
            counts.append(len(events))
            totals.append(total)
            overflow = overflow or bool(tracer.data["viztracer_metadata"].get("overflow")) \
                or total >= entries
            tracer.clear()
        ok = all(c == n for c in counts) and not overflow
        failed = failed or not ok
        out = {
            "impl": f"viztracer-{viztracer.__version__}",
            "case": args.case,
            "mode": mode,
            "config": {k: v for k, v in config.items()},
            "plain_ns": round(min(plain), 1),
            "traced_ns": round(min(traced), 1),
            "added_ns": round(min(traced) - min(plain), 1),
            "calls": n,
            "repeats": args.repeats,
            "events_of_function": counts,
            "events_total": totals,
            "other_events_last_repeat": others,
            "overflow": overflow,
            "events_ok": ok,
        }
        print(json.dumps(out), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
