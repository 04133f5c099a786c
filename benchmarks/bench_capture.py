#!/usr/bin/env python3
"""Cost of ``@flowcept_task`` per call, and memory per rank over a long run.

    python benchmarks/bench_capture.py                 # everything, ~1-2 min on 2 cores
    python benchmarks/bench_capture.py --calls 200000 --memory-records 10000000
    python benchmarks/bench_capture.py --no-ref --no-memory

Added cost: an empty function with two scalar kwargs, ``f(x=1, y=2)``, called
N times plainly and N times decorated, one fresh ``with Flowcept(...)`` per
repeat (records drained into the embedded LMDB store by the background drain
thread; starting/stopping the context is not timed), min per-call time over
the repeats for each side; added = decorated - plain.  Modes, each in its own
subprocess: the compiled wrapper (flowcept._fastcapture), the pure-Python
wrapper (FLOWCEPT_PURE_PYTHON=1), both with a 256 MiB ring (no spill while
measuring) and with the default 4 MiB ring, and FLOWCEPT_ENABLED=0.  Side by
side, flowcept 1.0.3 (benchmarks/reference/ref_decorator.py in its own venv).

Memory: RSS sampled every 1 M decorated calls (compiled wrapper, default
4 MiB ring, drain running) over --memory-records calls.

Prints one JSON line per measurement and, at the end, a Markdown table.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_anon_bytes() -> int:
    """Anonymous (heap) part of RSS; the rest is file/shared mappings (ring, LMDB map)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


# -- child side --------------------------------------------------------------------------------

def child_added(mode: str, calls: int, repeats: int, ring_bytes: int) -> dict:
    from flowcept import Flowcept, flowcept_task
    from flowcept.query.tasks import read_records

    def f(x, y):
        pass

    @flowcept_task
    def g(x, y):
        pass

    kind = type(g).__name__
    perf = time.perf_counter_ns
    rng = range(calls)

    def time_loop(fn):
        t0 = perf()
        for _ in rng:
            fn(x=1, y=2)
        return (perf() - t0) / calls

    opts = {"ring_bytes": ring_bytes}
    with Flowcept(workflow_name="bench-capture-warmup", **opts):
        for _ in range(min(calls, 20_000)):
            f(x=1, y=2)
            g(x=1, y=2)
    plain, decorated = [], []
    for rep in range(repeats):
        gc.collect()
        plain.append(time_loop(f))
        gc.collect()
        with Flowcept(workflow_name=f"bench-capture-{rep}", **opts) as fc:
            decorated.append(time_loop(g))
            stats = fc.session.stats() if fc.session is not None else {}
    out = {"mode": mode, "wrapper": kind, "ring_bytes": ring_bytes, "calls": calls,
           "plain_ns": round(min(plain), 1), "decorated_ns": round(min(decorated), 1),
           "added_ns": round(min(decorated) - min(plain), 1),
           "spilled_last_repeat": stats.get("spilled", 0), "dropped_last_repeat": stats.get("dropped", 0)}
    if mode != "disabled":
        stored = len(read_records(os.environ["FLOWCEPT_RUN_DIR"]).records)
        out["stored"] = stored
        out["stored_ok"] = stored == calls * repeats + min(calls, 20_000)
    return out


def child_memory(records: int, every: int) -> dict:
    from flowcept import Flowcept, flowcept_task

    @flowcept_task
    def g(x, y):
        pass

    series, anon = [], []
    with Flowcept(workflow_name="bench-capture-memory") as fc:   # default ring (4 MiB)
        for _ in range(min(every, 100_000)):   # warm-up
            g(x=1, y=2)
        gc.collect()
        series.append(_rss_bytes())
        anon.append(_rss_anon_bytes())
        done = 0
        t0 = time.perf_counter()
        while done < records:
            for _ in range(every):
                g(x=1, y=2)
            done += every
            series.append(_rss_bytes())
            anon.append(_rss_anon_bytes())
        seconds = time.perf_counter() - t0
        stats = fc.session.stats()
    mib = [round(v / 2**20, 1) for v in series]
    anon_mib = [round(v / 2**20, 1) for v in anon]
    return {"mode": "memory", "wrapper": type(g).__name__, "records": records,
            "ring_bytes": stats["capacity"], "rss_mib": mib, "growth_mib": round(mib[-1] - mib[0], 1),
            "rss_anon_mib": anon_mib, "anon_growth_mib": round(anon_mib[-1] - anon_mib[0], 1),
            "max_minus_first_mib": round(max(mib) - mib[0], 1), "seconds": round(seconds, 1),
            "spilled": stats["spilled"], "dropped": stats["dropped"]}


# -- parent side -------------------------------------------------------------------------------

def run_child(args: list, env_extra: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
        env.update({"FLOWCEPT_RUN_DIR": os.path.join(tmp, "runs"),
                    "FLOWCEPT_SHM_DIR": os.path.join(tmp, "shm"),
                    "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")})
        os.makedirs(env["FLOWCEPT_SHM_DIR"])
        env.update(env_extra)
        out = subprocess.run([sys.executable, __file__, "--child", *args], env=env,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"child {args} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def run_reference(calls: int):
    try:
        setup = subprocess.run(["bash", os.path.join(HERE, "reference", "setup_ref_venv.sh")],
                               capture_output=True, text=True, timeout=900)
        if setup.returncode != 0:
            return {"error": "reference venv setup failed: " + setup.stderr.strip()[-300:]}
        py = setup.stdout.strip().splitlines()[-1]
        out = subprocess.run([py, os.path.join(HERE, "reference", "ref_decorator.py"), str(calls)],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            return {"error": "ref_decorator.py failed: " + out.stderr.strip()[-300:]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": repr(e)}


def run_c_bench():
    try:
        out = subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "csrc"), "bench"],
                             capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        return [f"(make -C csrc bench failed: {e!r})"]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode != 0:
        lines.append(f"(make -C csrc bench exited {out.returncode}: {out.stderr.strip()[-200:]})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000, help="calls per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory-records", type=int, default=10_000_000)
    ap.add_argument("--memory-every", type=int, default=1_000_000)
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-c-bench", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        if a.child[0] == "added":
            mode, calls, repeats, ring = a.child[1], int(a.child[2]), int(a.child[3]), int(a.child[4])
            print(json.dumps(child_added(mode, calls, repeats, ring)), flush=True)
        else:
            print(json.dumps(child_memory(int(a.child[1]), int(a.child[2]))), flush=True)
        return 0

    load0 = os.getloadavg()[0]
    big, default = 256 << 20, 4 << 20
    modes = [("compiled", big, {}), ("pure", big, {"FLOWCEPT_PURE_PYTHON": "1"}),
             ("compiled", default, {}), ("pure", default, {"FLOWCEPT_PURE_PYTHON": "1"}),
             ("disabled", default, {"FLOWCEPT_ENABLED": "0"})]
    results = []
    for mode, ring, env in modes:
        r = run_child(["added", mode, str(a.calls), str(a.repeats), str(ring)], env)
        print(json.dumps(r), flush=True)
        results.append(r)
    ref = None
    if not a.no_ref:
        ref = run_reference(a.calls)
        print(json.dumps({"mode": "reference", **ref}), flush=True)
    c_lines = [] if a.no_c_bench else run_c_bench()
    for ln in c_lines:
        print(f"# csrc bench: {ln}", flush=True)
    mem = None
    if not a.no_memory:
        mem = run_child(["memory", str(a.memory_records), str(a.memory_every)], {})
        print(json.dumps(mem), flush=True)

    print(json.dumps({"loadavg_1min_start": round(load0, 2), "loadavg_1min_end": round(os.getloadavg()[0], 2),
                      "cpus": os.cpu_count()}), flush=True)
    ref_added = ref.get("added_ns") if ref and "added_ns" in ref else None
    print("\n| wrapper | ring | plain ns | decorated ns | added ns/call | ours/ref |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        ratio = f"{r['added_ns'] / ref_added:.3f} (1/{ref_added / max(r['added_ns'], 1e-9):.0f})" \
            if ref_added and r["mode"] != "disabled" else "-"
        print(f"| {r['mode']} ({r['wrapper']}) | {r['ring_bytes'] >> 20} MiB | {r['plain_ns']} | "
              f"{r['decorated_ns']} | {r['added_ns']} | {ratio} |")
    if ref_added:
        print(f"| flowcept 1.0.3 (offline) | - | {ref['plain_ns']} | {ref['decorated_ns']} | "
              f"{ref_added} | 1 |")
    if mem:
        print(f"\nRSS (MiB) every {a.memory_every:,} calls over {mem['records']:,}: {mem['rss_mib']}; "
              f"growth {mem['growth_mib']} MiB (max - first {mem['max_minus_first_mib']}); "
              f"RssAnon {mem['rss_anon_mib']}: growth {mem['anon_growth_mib']} MiB; "
              f"{mem['seconds']} s, spilled {mem['spilled']}, dropped {mem['dropped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
