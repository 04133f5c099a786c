"""Archive benchmarks: LMDB -> HDF5 compaction speed, statistics scan speed,
archive size per record vs flowcept 1.0.3's JSON-lines buffer.

    python benchmarks/bench_archive.py                 # 2,000,000 records
    python benchmarks/bench_archive.py 10000000 --compression gzip
    python benchmarks/bench_archive.py 10000000 --dir D --keep --cache cold   # store not in the page cache
    python benchmarks/bench_archive.py 10000000 --dir D --keep --baseline OLD  # side by side with OLD
    python benchmarks/bench_archive.py 10000000 --dir D --keep --profile       # where the CPU goes

``--baseline OLD`` compacts with another flowcept source tree as well, alternating with this
one in every repeat (e.g. OLD from ``git archive REV | tar -x -C OLD`` and
``python setup.py build_ext --inplace`` there), and prints the ratios.  ``--profile`` runs one
compaction in this process with its thread pools run inline, under cProfile on process time,
and prints the functions that take the CPU (C calls and deflate included).

The synthetic store is written through the real write path
(flowcept.native.batch.build_frame + LmdbStore.put_batches): ranks x steps of a
``timestep`` parent with ``exchange_halos``/``diffuse``/``residual``
children, msgpack payloads with used/generated values, one workflow record.
Prints one JSON line per measurement on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import msgpack
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

ACTIVITIES = ["timestep", "exchange_halos", "diffuse", "residual"]


def synth_records(n: int, ranks: int = 16, seed: int = 1, t0_ns: int = 1_795_838_200_000_000_000):
    """n task records (RECORD_DTYPE) + payloads + activity names, grouped per rank.

    Returns (records, payloads, strings) for each rank, as a list."""
    from flowcept.record.layout import RECORD_DTYPE
    rng = np.random.default_rng(seed)
    per_rank = [n // ranks + (1 if r < n % ranks else 0) for r in range(ranks)]
    out = []
    for r, m in enumerate(per_rank):
        recs = np.zeros(m, RECORD_DTYPE)
        i = np.arange(m)
        step, pos = i // 4, i % 4          # 4 records per step: parent + 3 children
        dur = rng.lognormal(mean=np.log([2e5, 4e4, 9e4, 3e4])[pos], sigma=0.4).astype(np.int64)
        base = t0_ns + step * 400_000 + r * 1_000
        start = base + np.array([0, 10_000, 60_000, 160_000])[pos]
        start[pos == 0] = base[pos == 0]
        end = start + dur
        end[pos == 0] = np.maximum(end[pos == 0], start[pos == 0] + 300_000)
        origin = (r + 1) << 40
        recs["task_id"] = origin + i + 1
        recs["parent_id"] = np.where(pos == 0, 0, origin + (step * 4) + 1)
        recs["workflow_id"] = 0x174FD72B81B5E6B1
        recs["start_ns"], recs["end_ns"] = start, end
        recs["rank"] = r
        recs["activity_id"] = 1 + pos    # string 0 is the node
        recs["status"] = 0
        recs["flags"] = 1
        delta = rng.random(m)
        payloads = [msgpack.packb({"used": {"step": int(s), "alpha": 0.1},
                                   "generated": {"delta": float(d)}}, use_bin_type=True)
                    for s, d in zip(step.tolist(), delta.tolist())]
        out.append((recs, payloads))
    return out


def build_store(path: str, n: int, ranks: int = 16, batch_records: int = 8192, node: str = "bench") -> float:
    """Writes a synthetic store with n task records; returns seconds taken."""
    from flowcept.native.batch import batch_key, build_frame
    from flowcept.record.layout import FLAG_WORKFLOW, RECORD_DTYPE
    from flowcept.store.lmdb import LmdbStore
    from flowcept.config import load_config
    t = time.perf_counter()
    strings = ["host:" + node] + ACTIVITIES
    job_id = 42
    st = LmdbStore(path, load_config(lmdb_map_size=1 << 38))
    try:
        for r, (recs, pays) in enumerate(synth_records(n, ranks)):
            items = []
            for seq, lo in enumerate(range(0, len(recs), batch_records)):
                hi = min(lo + batch_records, len(recs))
                items.append((batch_key(job_id, r + 1, seq),
                              build_frame(recs[lo:hi], pays[lo:hi], strings, job_id=job_id,
                                          ring_uid=r + 1, seq=seq, rank=r)))
                if len(items) >= 16:
                    st.put_batches(items)
                    items = []
            if r == 0:   # the workflow record
                wf = np.zeros(1, RECORD_DTYPE)
                wf["workflow_id"], wf["flags"] = 0x174FD72B81B5E6B1, 1 | FLAG_WORKFLOW
                wf["start_ns"] = wf["end_ns"] = recs["start_ns"][0]
                doc = msgpack.packb({"name": "bench", "job": "bench-job", "user": "bench",
                                     "campaign_id": "bench"}, use_bin_type=True)
                items.append((batch_key(job_id, r + 1, 1 << 30),
                              build_frame(wf, [doc], strings, job_id=job_id, ring_uid=r + 1,
                                          seq=1 << 30, rank=r)))
            st.put_batches(items)
    finally:
        st.close()
    return time.perf_counter() - t


def json_buffer_bytes_per_task(n_sample: int = 100_000, ranks: int = 16) -> float:
    """Bytes per task of flowcept 1.0.3's offline buffer (flowcept_buffer.jsonl) for
    the synthetic tasks: one compact JSON object per task with the fields 1.0.3
    writes (checked against a real buffer file by reference_buffer_bytes_per_task)."""
    import uuid
    wf, camp = str(uuid.uuid4()), str(uuid.uuid4())
    total = count = 0
    for recs, pays in synth_records(n_sample, ranks):
        for r, p in zip(recs.tolist(), pays):
            body = msgpack.unpackb(p)
            t0, t1 = r[3] / 1e9, r[4] / 1e9
            doc = {"activity_id": ACTIVITIES[r[7] - 1], "workflow_id": wf, "campaign_id": camp,
                   "used": body["used"], "started_at": t0, "hostname": "localhost",
                   "task_id": str(t0), "status": "FINISHED", "ended_at": t1,
                   "generated": body["generated"], "type": "task"}
            total += len(json.dumps(doc, separators=(",", ":"))) + 1
            count += 1
    return total / count


def reference_buffer_bytes_per_task(n: int = 20000):
    """Bytes per task of a real flowcept 1.0.3 buffer file (tasks f(step, alpha) -> float,
    like the synthetic ones), when benchmarks/.ref-venv exists; else None."""
    import subprocess
    py = os.environ.get("FLOWCEPT_REF_VENV", os.path.join(HERE, ".ref-venv"))
    py = os.path.join(py, "bin", "python")
    if not os.path.exists(py):
        return None
    code = ("import os, sys\nos.environ['FLOWCEPT_USE_DEFAULT'] = 'true'\n"
            "from flowcept import Flowcept, flowcept_task\n"
            "@flowcept_task\ndef diffuse(step, alpha):\n    return 0.123456789\n"
            "with Flowcept(workflow_name='bench'):\n"
            f"    for s in range({n}):\n        diffuse(step=s, alpha=0.1)\n")
    d = tempfile.mkdtemp(prefix="fc-ref-buf-")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
        subprocess.run([py, "-c", code], cwd=d, env=env, check=True, timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = os.path.join(d, "flowcept_buffer.jsonl")
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        tasks = [ln for ln in lines if b'"type":"task"' in ln]
        return sum(map(len, tasks)) / len(tasks)
    finally:
        shutil.rmtree(d, ignore_errors=True)


_CHILD = r"""
import json, os, resource, sys, time
def rss(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0
import h5py, numpy, msgpack
import flowcept.archive as fa
import flowcept.archive.hdf5, flowcept.native.batch, flowcept.query.tasks, flowcept.store.lmdb
run, out, comp, mem = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
kw = {"memory_bytes": mem} if mem else {}
try:
    import inspect
    if "memory_bytes" not in inspect.signature(fa.compact).parameters:
        kw = {}
except (TypeError, ValueError):
    kw = {}
import threading
base, base_anon = rss("VmRSS:"), rss("RssAnon:")
peak_anon = [base_anon]
done = threading.Event()
def sample():   # anonymous memory (what the compaction holds), apart from mapped store pages
    while not done.wait(0.005):
        peak_anon[0] = max(peak_anon[0], rss("RssAnon:"))
threading.Thread(target=sample, daemon=True).start()
c0 = sum(os.times()[:2])
rep = fa.compact(run, out, overwrite=True, compression=comp, progress=False, **kw)
done.set()
assert os.path.dirname(fa.__file__).startswith(sys.argv[5]), (fa.__file__, sys.argv[5])
print(json.dumps({"records": rep.records, "seconds": rep.seconds, "bytes": rep.bytes,
                  "runs": getattr(rep, "runs", 0), "chains": getattr(rep, "chains", 0),
                  "base_rss": base, "peak_rss": rss("VmHWM:"), "cpu_s": sum(os.times()[:2]) - c0,
                  "peak_anon": peak_anon[0] - base_anon,
                  "memory_bound_mib": (mem or getattr(rep, "memory_bytes", 0)) / 2**20 or None}))
"""


def evict_store(run: str):
    """Drops the store's files from the page cache (POSIX_FADV_DONTNEED on our own files),
    so that the next compaction reads a cold store, as after a long job on a busy node."""
    for root, _dirs, files in os.walk(run):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm_store(run: str):
    """Reads the store's files once, so that the next compaction finds them in the page cache
    (the usual case in an epilog, right after the job wrote them)."""
    for root, _dirs, files in os.walk(run):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(16 << 20):
                    pass


def compact_in_child(run: str, out: str, compression: str, memory: int, cache: str = "warm",
                     tree: str = None) -> dict:
    """One compaction in a fresh interpreter, so that its peak RSS (VmHWM, minus the RSS
    after the imports) is the compaction's own and not the store builder's.  ``cache``:
    "warm" reads the store into the page cache first, "cold" drops it from there.  ``tree``:
    the flowcept source tree to run (default: this one)."""
    import subprocess
    if cache == "cold":
        evict_store(run)
    elif cache == "warm":
        warm_store(run)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([tree or os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    # cwd: not this checkout, whose flowcept/ would shadow ``tree`` ("" leads sys.path for -c)
    res = subprocess.run([sys.executable, "-c", _CHILD, run, out, compression, str(memory or 0),
                          os.path.realpath(tree or os.path.dirname(HERE))],
                         capture_output=True, text=True, timeout=3600, env=env,
                         cwd=os.path.dirname(os.path.abspath(out)))
    if res.returncode:
        raise RuntimeError(f"compaction failed: {res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _stats(values):
    vals = sorted(values)
    return vals[0], vals[len(vals) // 2]


def profile_compaction(run: str, out: str, compression: str, memory: int, top: int = 20) -> dict:
    """One compaction with its thread pools run inline (so that cProfile sees every call)
    under cProfile on process time: the functions that take the CPU, by own time."""
    import cProfile
    import importlib
    import importlib.util
    import pstats
    from concurrent.futures import Future

    class InlinePool:
        def __init__(self, *a, **k):
            pass

        def submit(self, fn, *a, **k):
            f = Future()
            try:
                f.set_result(fn(*a, **k))
            except BaseException as e:  # noqa: BLE001 - handed to the caller as the pool would
                f.set_exception(e)
            return f

        def shutdown(self, wait=True):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    import flowcept.archive as fa
    mods = [importlib.import_module(m) for m in ("flowcept.archive.writer", "flowcept.archive.compact")
            if importlib.util.find_spec(m)]
    saved = [(m, m.ThreadPoolExecutor) for m in mods if hasattr(m, "ThreadPoolExecutor")]
    for m, _ in saved:
        m.ThreadPoolExecutor = InlinePool
    prof = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    try:
        prof.enable()
        fa.compact(run, out, overwrite=True, compression=compression, progress=False,
                   **({"memory_bytes": memory} if memory else {}))
        prof.disable()
    finally:
        for m, pool in saved:
            m.ThreadPoolExecutor = pool
    cpu = time.process_time() - c0
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {"bench": "profile", "cpu_s": round(cpu, 2), "top": [
        {"own_s": round(v[2], 3), "calls": v[1],
         "function": (k[2] if k[0] == "~" else f"{os.path.basename(k[0])}:{k[1]} {k[2]}")}
        for k, v in rows]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="?", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compression", default="gzip", choices=("gzip", "lzf", "none"))
    ap.add_argument("--all-compressions", action="store_true", help="also time lzf and none")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed)")
    ap.add_argument("--no-reference", action="store_true", help="skip the real flowcept 1.0.3 buffer")
    ap.add_argument("--memory", type=int, default=0,
                    help="compaction memory bound in bytes (default: the configuration's compact_memory_bytes)")
    ap.add_argument("--keep", action="store_true", help="reuse the store in --dir if it has N records")
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm",
                    help="store in the page cache before each compaction (warm, default) or dropped "
                         "from it (cold)")
    ap.add_argument("--baseline", default=None, metavar="TREE",
                    help="another flowcept source tree (with its extension built) to compact with "
                         "too, alternating with this one")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one compaction (thread pools inline, cProfile on process time)")
    ap.add_argument("--compaction-only", action="store_true",
                    help="skip the statistics scan and the size comparison")
    args = ap.parse_args(argv)
    import flowcept.archive as fa

    work = args.dir or tempfile.mkdtemp(prefix="fc-bench-archive-")
    os.makedirs(work, exist_ok=True)
    n = args.records
    try:
        run = os.path.join(work, "run")
        marker = os.path.join(work, "run.records")
        if args.keep and args.dir and os.path.exists(marker) and open(marker).read() == str(n):
            built = 0.0
        else:
            shutil.rmtree(run, ignore_errors=True)
            built = build_store(os.path.join(run, "store", "bench"), n)
            with open(marker, "w") as f:
                f.write(str(n))
        store_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(run) for f in fs)
        print(json.dumps({"bench": "build_store", "records": n, "seconds": round(built, 3),
                          "lmdb_bytes_per_record": round(store_bytes / n, 1)}), flush=True)
        out = os.path.join(work, "bench.h5")
        kinds = ("gzip", "lzf", "none") if args.all_compressions else (args.compression,)
        trees = [("current", None)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
        for comp in kinds:
            results = {name: [] for name, _t in trees}
            load_before = os.getloadavg()
            for _ in range(args.repeats):
                for name, tree in trees:      # alternated, so that both see the same load
                    rep = compact_in_child(run, out, comp, args.memory, args.cache, tree)
                    assert rep["records"] == n, rep
                    results[name].append(rep)
            load_after = os.getloadavg()
            line = {}
            for name, _t in trees:
                reps = results[name]
                best, median = _stats([r["seconds"] for r in reps])
                cpu_best, cpu_median = _stats([r["cpu_s"] for r in reps])
                rep = reps[-1]
                line[name] = {
                    "best_s": round(best, 3), "median_s": round(median, 3),
                    "records_per_s": round(n / best), "median_records_per_s": round(n / median),
                    "cpu_s_best": round(cpu_best, 2), "cpu_s_median": round(cpu_median, 2),
                    "records_per_cpu_s": round(n / cpu_best),
                    "bytes_per_record": round(rep["bytes"] / n, 2),
                    "peak_rss_mib": round(max(r["peak_rss"] - r["base_rss"] for r in reps) / 2**20, 1),
                    "peak_anon_mib": round(max(r["peak_anon"] for r in reps) / 2**20, 1),
                    "base_rss_mib": round(rep["base_rss"] / 2**20, 1),
                    "sorted_runs": rep.get("runs"), "chains": rep.get("chains")}
            out_line = {"bench": "compact", "compression": comp, "records": n, "repeats": args.repeats,
                        "memory_bound_mib": results["current"][-1]["memory_bound_mib"],
                        "cache": args.cache, "isal": _has_isal(),
                        "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in load_after], **line["current"]}
            if args.baseline:
                b = line["baseline"]
                out_line["baseline"] = b
                out_line["cpu_ratio_baseline_over_current"] = round(b["cpu_s_median"] / line["current"]["cpu_s_median"], 2)
                out_line["wall_ratio_baseline_over_current"] = round(b["median_s"] / line["current"]["median_s"], 2)
            print(json.dumps(out_line), flush=True)
        if args.profile:
            warm_store(run)
            print(json.dumps(profile_compaction(run, out, args.compression, args.memory)), flush=True)
        if args.compaction_only:
            return 0
        if args.compression not in kinds[-1:]:
            fa.compact(run, out, overwrite=True, compression=args.compression, progress=False)
        archive_bytes = os.path.getsize(out)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            with fa.open(out) as a:
                s = a.stats()
            times.append(time.perf_counter() - t)
        assert int(s["count"].sum()) == n
        print(json.dumps({"bench": "stats_scan", "records": n, "best_s": round(min(times), 3),
                          "records_per_s": round(n / min(times)),
                          "median_records_per_s": round(n / sorted(times)[len(times) // 2])}), flush=True)
        emu = json_buffer_bytes_per_task(min(n, 100_000))
        ref = None if args.no_reference else reference_buffer_bytes_per_task()
        print(json.dumps({"bench": "size", "records": n, "archive_bytes_per_record": round(archive_bytes / n, 2),
                          "flowcept103_json_bytes_per_task_emulated": round(emu, 1),
                          "flowcept103_json_bytes_per_task_real": round(ref, 1) if ref else None,
                          "ratio": round(emu / (archive_bytes / n), 1)}), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _has_isal() -> bool:
    try:
        import isal  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
