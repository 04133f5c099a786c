#!/usr/bin/env python3
"""Cost of ``@flowcept_task`` per call, side by side with flowcept 1.0.3 and VizTracer in
one run, and memory per rank over a long run.

    python benchmarks/bench_capture.py                 # everything, a few minutes on 2 cores
    python benchmarks/bench_capture.py --calls 200000 --repeats 3 --no-memory --no-c-bench
    python benchmarks/bench_capture.py --no-ref --no-viztracer --no-numpy --no-memory

Two cases, each called N times plainly and N times decorated (traced), min per-call time
over the repeats for each side; added = decorated - plain (the loop cancels):

- ``f(x=1, y=2)`` on an empty function (``--calls``);
- ``diffuse(step, u, alpha)`` returning 0.5, ``u`` a 1 MiB float64 array (128 x 1024),
  positional arguments, as heat2d's task (``--numpy-calls``).  Default configuration:
  numpy_mode "summary", and at 131,072 elements (> numpy_stats_max) the array is recorded
  by dtype, shape and size.

Ours: one fresh ``with Flowcept(...)`` per repeat (starting/stopping it is not timed), records
drained into the embedded LMDB store.  Modes, each in its own subprocess with its own run
directory: the compiled wrapper (flowcept._fastcapture) and the pure-Python wrapper
(FLOWCEPT_PURE_PYTHON=1), with a 256 MiB ring and with the default 4 MiB ring, and
FLOWCEPT_ENABLED=0.  Every mode counts its records: per timed repeat the ring's pushed /
spilled / dropped counters (the session's ring stats, before and after the loop), and at the
end the task records read back from the store (all repeats and the warm-up), of them how
many were replayed from the spill file.

Side by side, in the same run, each in its own virtualenv (created on first use):
flowcept 1.0.3 (benchmarks/reference/ref_decorator.py, offline mode) and VizTracer
(benchmarks/reference/viztracer_calls.py), timing only and with log_func_args +
log_func_retval; its buffer is sized for the loop and its events are counted.  VizTracer
logging the array's repr costs about 0.4 ms a call, so that one measurement uses
``--viztracer-numpy-args-calls`` calls per repeat.

Memory: RSS sampled every 1 M decorated calls (compiled wrapper, default 4 MiB ring, drain
running) over --memory-records calls.

Prints one JSON line per measurement and, at the end, the machine, date, Python versions
and a Markdown table per case.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
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

def _ring_stats(fc) -> dict:
    """The producer's ring counters (pushed / spilled / dropped), or {} without a session."""
    from flowcept.capture import session as runtime
    s = runtime.current() or getattr(fc, "session", None)
    if s is None:
        return {}
    st = s.stats()
    return {k: int(st.get(k, 0)) for k in ("pushed", "spilled", "dropped")}


def _delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("pushed", "spilled", "dropped")}


def _count_stored(run_dir: str) -> tuple:
    """(task records in the store, of them replayed from a spill file), batch by batch so
    that millions of records are counted without decoding their payloads."""
    from flowcept.query import tasks
    try:
        from flowcept.record.layout import FLAG_FROM_SPOOL, FLAG_WORKFLOW
        iter_batches = tasks.iter_batches
    except (ImportError, AttributeError):   # layout moved: count through the reader
        recs = tasks.read_records(run_dir).records
        return len(recs), None
    stored = from_spill = 0
    for b in iter_batches(run_dir):
        flags = b.records["flags"]
        task = (flags & FLAG_WORKFLOW) == 0
        stored += int(task.sum())
        from_spill += int((task & ((flags & FLAG_FROM_SPOOL) != 0)).sum())
    return stored, from_spill


def _stored(run_dir: str, expected: int) -> tuple:
    """_count_stored, read again for a while when short: a leader in another process may
    still be committing."""
    deadline = time.monotonic() + 20
    while True:
        stored, from_spill = _count_stored(run_dir)
        if stored >= expected or time.monotonic() > deadline:
            return stored, from_spill
        time.sleep(0.5)


def child_added(mode: str, case: str, calls: int, repeats: int, ring_bytes: int) -> dict:
    from flowcept import Flowcept, flowcept_task

    perf = time.perf_counter_ns
    rng = range(calls)
    if case == "scalar":
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
        u = np.zeros((128, 1024))   # 1 MiB of float64: recorded by dtype, shape and size

        def diffuse(step, u, alpha):
            return 0.5

        f, g = diffuse, flowcept_task(diffuse)

        def time_loop(fn, calls=rng):
            t0 = perf()
            for i in calls:
                fn(i, u, 0.1)
            return (perf() - t0) / len(calls)

    kind = type(g).__name__
    opts = {"ring_bytes": ring_bytes}
    warm = min(calls, 20_000)
    with Flowcept(workflow_name="bench-capture-warmup", **opts) as fc:
        s0 = _ring_stats(fc)
        time_loop(f, range(warm))
        time_loop(g, range(warm))
        warm_counts = _delta(_ring_stats(fc), s0)
    plain, decorated, per_repeat = [], [], []
    for rep in range(repeats):
        gc.collect()
        plain.append(time_loop(f))
        gc.collect()
        with Flowcept(workflow_name=f"bench-capture-{rep}", **opts) as fc:
            s0 = _ring_stats(fc)
            decorated.append(time_loop(g))
            per_repeat.append(_delta(_ring_stats(fc), s0))
    out = {"mode": mode, "case": case, "wrapper": kind, "ring_bytes": ring_bytes, "calls": calls,
           "repeats": repeats, "plain_ns": round(min(plain), 1),
           "decorated_ns": round(min(decorated), 1), "added_ns": round(min(decorated) - min(plain), 1),
           "pushed_per_repeat": [c["pushed"] for c in per_repeat],
           "spilled_per_repeat": [c["spilled"] for c in per_repeat],
           "dropped_per_repeat": [c["dropped"] for c in per_repeat],
           "spilled_warmup": warm_counts.get("spilled", 0),
           # every call of a timed repeat is in the ring, its spill file, or counted dropped
           "accounted_ok": mode == "disabled" or all(
               c["pushed"] + c["spilled"] + c["dropped"] == calls for c in per_repeat)}
    if mode != "disabled":
        expected = calls * repeats + warm
        stored, from_spill = _stored(os.environ["FLOWCEPT_RUN_DIR"], expected)
        out.update(expected=expected, stored=stored, stored_from_spill=from_spill,
                   stored_ok=stored == expected)
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
        stats = _ring_stats(fc)
    mib = [round(v / 2**20, 1) for v in series]
    anon_mib = [round(v / 2**20, 1) for v in anon]
    return {"mode": "memory", "wrapper": type(g).__name__, "records": records,
            "rss_mib": mib, "growth_mib": round(mib[-1] - mib[0], 1),
            "rss_anon_mib": anon_mib, "anon_growth_mib": round(anon_mib[-1] - anon_mib[0], 1),
            "max_minus_first_mib": round(max(mib) - mib[0], 1), "seconds": round(seconds, 1),
            "pushed": stats["pushed"], "spilled": stats["spilled"], "dropped": stats["dropped"],
            **_memory_stored(done + min(every, 100_000))}


def _memory_stored(expected: int) -> dict:
    stored, from_spill = _stored(os.environ["FLOWCEPT_RUN_DIR"], expected)
    return {"expected": expected, "stored": stored, "stored_from_spill": from_spill,
            "stored_ok": stored == expected}


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
        if out.returncode != 0:   # reported in its row; the other measurements go on
            print(f"child {args} failed:\n{out.stderr}", file=sys.stderr, flush=True)
            tail = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
            return {"mode": args[1] if args[0] == "added" else "memory", "error": tail[0][-200:]}
        return json.loads(out.stdout.strip().splitlines()[-1])


def _venv_python(script: str):
    """The python of a reference venv, created by its setup script if need be (or an error)."""
    setup = subprocess.run(["bash", os.path.join(HERE, "reference", script)],
                           capture_output=True, text=True, timeout=900)
    if setup.returncode != 0:
        return None, f"{script} failed: " + setup.stderr.strip()[-300:]
    return setup.stdout.strip().splitlines()[-1], None


def _venv_json_lines(py: str, argv: list, what: str) -> list:
    """Runs a reference script with its venv's python; its JSON lines (or one error)."""
    try:
        out = subprocess.run([py, *argv], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as e:
        return [{"error": f"{what}: {e!r}"}]
    lines = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0:
        lines.append({"error": f"{what} exited {out.returncode}: " + out.stderr.strip()[-300:]})
    return lines or [{"error": f"{what}: no output"}]


def _python_version(py: str) -> str:
    try:
        return subprocess.run([py, "-c", "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_reference(py: str, case: str, calls: int, repeats: int) -> dict:
    """flowcept 1.0.3's decorator on the same loop, in its venv."""
    lines = _venv_json_lines(py, [os.path.join(HERE, "reference", "ref_decorator.py"), str(calls),
                                  "--repeats", str(repeats), "--case", case], "ref_decorator.py")
    return lines[-1]


def run_viztracer(py: str, case: str, calls: int, repeats: int, mode: str) -> dict:
    """VizTracer on the same loop, in its venv (its buffer sized for the loop, events counted)."""
    lines = _venv_json_lines(py, [os.path.join(HERE, "reference", "viztracer_calls.py"), str(calls),
                                  "--repeats", str(repeats), "--case", case, "--modes", mode],
                             "viztracer_calls.py")
    return lines[0] if "error" not in lines[0] else lines[-1]


def machine() -> dict:
    info = {"cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model"] = fields.get("Model name", "?")
        info["cores_per_socket"] = fields.get("Core(s) per socket")
        info["threads_per_core"] = fields.get("Thread(s) per core")
        info["sockets"] = fields.get("Socket(s)")
    except (OSError, subprocess.SubprocessError):
        info["model"] = "?"
    return info


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
    ap.add_argument("--calls", type=int, default=200_000, help="calls per repeat, f(x=1, y=2)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of every measurement (min kept)")
    ap.add_argument("--numpy-calls", type=int, default=20_000,
                    help="calls per repeat, diffuse(step, u, alpha) with a 1 MiB array")
    ap.add_argument("--viztracer-numpy-args-calls", type=int, default=2_000,
                    help="calls per repeat for VizTracer logging the 1 MiB array's repr "
                         "(about 0.4 ms a call)")
    ap.add_argument("--memory-records", type=int, default=10_000_000)
    ap.add_argument("--memory-every", type=int, default=1_000_000)
    ap.add_argument("--no-ref", action="store_true", help="without flowcept 1.0.3")
    ap.add_argument("--no-viztracer", action="store_true", help="without VizTracer")
    ap.add_argument("--no-numpy", action="store_true", help="without the 1 MiB numpy argument case")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-c-bench", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        if a.child[0] == "added":
            mode, case = a.child[1], a.child[2]
            calls, repeats, ring = int(a.child[3]), int(a.child[4]), int(a.child[5])
            print(json.dumps(child_added(mode, case, calls, repeats, ring)), flush=True)
        else:
            print(json.dumps(child_memory(int(a.child[1]), int(a.child[2]))), flush=True)
        return 0

    started = time.time()
    load0 = os.getloadavg()[0]
    ref_py = viz_py = None
    versions = {"ours": platform.python_version()}
    if not a.no_ref:
        ref_py, err = _venv_python("setup_ref_venv.sh")
        if err:
            print(json.dumps({"impl": "flowcept-1.0.3", "error": err}), flush=True)
        else:
            versions["flowcept 1.0.3"] = _python_version(ref_py)
    if not a.no_viztracer:
        viz_py, err = _venv_python("setup_viztracer_venv.sh")
        if err:
            print(json.dumps({"impl": "viztracer", "error": err}), flush=True)
        else:
            versions["VizTracer"] = _python_version(viz_py)

    big, default = 256 << 20, 4 << 20
    pure = {"FLOWCEPT_PURE_PYTHON": "1"}
    cases = [("scalar", a.calls, [("compiled", big, {}), ("compiled", default, {}),
                                  ("pure", big, pure), ("pure", default, pure),
                                  ("disabled", default, {"FLOWCEPT_ENABLED": "0"})])]
    if not a.no_numpy:
        cases.append(("numpy", a.numpy_calls, [("compiled", default, {}), ("compiled", big, {}),
                                               ("pure", default, pure)]))
    results = {}
    for case, calls, modes in cases:
        ours, others = [], []
        for mode, ring, env in modes:
            r = run_child(["added", mode, case, str(calls), str(a.repeats), str(ring)], env)
            print(json.dumps(r), flush=True)
            ours.append(r)
        if ref_py:
            r = {"impl": "flowcept-1.0.3", **run_reference(ref_py, case, calls, a.repeats)}
            print(json.dumps(r), flush=True)
            others.append(r)
        if viz_py:
            for vmode in ("timing", "args"):
                n = a.viztracer_numpy_args_calls if (case, vmode) == ("numpy", "args") else calls
                r = {"impl": "viztracer", **run_viztracer(viz_py, case, n, a.repeats, vmode)}
                print(json.dumps(r), flush=True)
                others.append(r)
        results[case] = (ours, others)

    c_lines = [] if a.no_c_bench else run_c_bench()
    for ln in c_lines:
        print(f"# csrc bench: {ln}", flush=True)
    mem = None
    if not a.no_memory:
        mem = run_child(["memory", str(a.memory_records), str(a.memory_every)], {})
        print(json.dumps(mem), flush=True)

    host = machine()
    run = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
           "seconds": round(time.time() - started), "python": versions, "machine": host,
           "loadavg_1min_start": round(load0, 2), "loadavg_1min_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(run), flush=True)

    print(f"\nMachine: {host['model']}, {host['cpus']} CPUs ({host.get('sockets')} socket(s) x "
          f"{host.get('cores_per_socket')} core(s) x {host.get('threads_per_core')} thread(s)); "
          f"{run['date_utc']} UTC; Python " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; 1-min load {run['loadavg_1min_start']} -> {run['loadavg_1min_end']}; "
          f"{a.repeats} repeats, min kept")
    titles = {"scalar": f"`f(x=1, y=2)`, {a.calls:,} calls per repeat",
              "numpy": f"`diffuse(step, u, alpha)`, `u` 1 MiB float64 (summary mode), "
                       f"{a.numpy_calls:,} calls per repeat"}
    for case, (ours, others) in results.items():
        print_table(titles[case], ours, others)
    if mem and "error" in mem:
        print(f"\nmemory run failed: {mem['error']}")
    elif mem:
        print(f"\nRSS (MiB) every {a.memory_every:,} calls over {mem['records']:,}: {mem['rss_mib']}; "
              f"growth {mem['growth_mib']} MiB (max - first {mem['max_minus_first_mib']}); "
              f"RssAnon {mem['rss_anon_mib']}: growth {mem['anon_growth_mib']} MiB; "
              f"{mem['seconds']} s; ring pushed {mem['pushed']:,}, spilled {mem['spilled']:,}, "
              f"dropped {mem['dropped']:,}; stored {mem['stored']:,} / {mem['expected']:,} "
              f"(from spill {_count(mem['stored_from_spill'])})")
    return 0


def _count(v) -> str:
    return "-" if v is None else f"{v:,}"


def _ratio(x, ref):
    if x is None or not ref:
        return "-"
    r = x / ref
    return f"{r:.3g}x" if r >= 1 or r <= 0 else f"1/{1 / r:.3g}"


def print_table(title: str, ours: list, others: list) -> None:
    ref = next((r.get("added_ns") for r in others if r["impl"].startswith("flowcept")), None)
    viz = {r.get("mode"): r.get("added_ns") for r in others if r["impl"].startswith("viztracer")}
    print(f"\n{title}\n")
    print("| what | ring | plain ns | with capture ns | added ns/call | vs flowcept 1.0.3 | "
          "vs VizTracer timing only | vs VizTracer + args | records: stored / expected | "
          "spilled in timed repeats (max per repeat) | stored from spill | dropped |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in ours:
        if "error" in r:
            print(f"| ours, {r['mode']} | - | error: {r['error']} | | | | | | | | | |")
            continue
        name = "ours, FLOWCEPT_ENABLED=0" if r["mode"] == "disabled" else \
            f"ours, {'compiled' if r['mode'] == 'compiled' else 'pure-Python'} wrapper ({r['wrapper']})"
        ring = f"{r['ring_bytes'] >> 20} MiB" + (" (default)" if r["ring_bytes"] == 4 << 20 else "")
        added = r["added_ns"]
        cmp = ["-", "-", "-"] if r["mode"] == "disabled" else \
            [_ratio(added, ref), _ratio(added, viz.get("timing")), _ratio(added, viz.get("args"))]
        spilled = r["spilled_per_repeat"]
        stored = f"{r['stored']:,} / {r['expected']:,}" + ("" if r["stored_ok"] else " **MISSING**") \
            if "stored" in r else "-"
        if not r.get("accounted_ok", True):
            stored += " (ring counters do not add up to the calls)"
        print(f"| {name} | {ring} | {r['plain_ns']} | {r['decorated_ns']} | **{added}** | "
              f"{' | '.join(cmp)} | {stored} | {sum(spilled):,} ({max(spilled, default=0):,}) | "
              f"{_count(r.get('stored_from_spill'))} | "
              f"{sum(r['dropped_per_repeat']):,} |")
    for r in others:
        if "error" in r:
            print(f"| {r['impl']} | - | error: {r['error'][:120]} | | | | | | | | | |")
            continue
        if r["impl"].startswith("flowcept"):
            name, traced = "flowcept 1.0.3 (offline, in-memory buffer)", r["decorated_ns"]
            checked = f"{r['records']:,} / {r['calls']:,} per repeat (buffer)"
        else:
            cfg = r["config"]
            extra = ", log_func_args + log_func_retval" if r["mode"] == "args" else ", default tracer"
            name = f"{r['impl']}{extra} (tracer_entries {cfg['tracer_entries']:,})"
            if r["calls"] != max(o["calls"] for o in ours):
                name += f", {r['calls']:,} calls per repeat"
            traced = r["traced_ns"]
            checked = (f"{min(r['events_of_function']):,} / {r['calls']:,} events per repeat"
                       + ("" if r["events_ok"] else " **WRONG**")
                       + (", overflowed" if r["overflow"] else ", no overflow"))
        added = r["added_ns"]
        print(f"| {name} | - | {r['plain_ns']} | {traced} | **{added}** | {_ratio(added, ref)} | "
              f"{_ratio(added, viz.get('timing'))} | {_ratio(added, viz.get('args'))} | {checked} | "
              f"- | - | - |")


if __name__ == "__main__":
    sys.exit(main())
