#!/usr/bin/env python3
"""Added cost of the framework instrumentation, with and without capture.

    python benchmarks/bench_adapters.py                # small sizes, ~1 min on 2 cores
    python benchmarks/bench_adapters.py --dask-tasks 5000 --forwards 5000

* Dask: ``client.map`` of a no-op over N keys on a LocalCluster with one
  in-process worker thread (processes=False, so the scheduler round trip
  is the same on both sides), wall time per task with no plugin and with
  ``FlowceptDaskWorkerAdapter``, alternating in one cluster; min over repeats.
* PyTorch: forward of a 3-layer MLP (batch 32, width 64) on CPU, plain
  module vs ``@flowcept_torch`` with Flowcept's settings
  ``instrumentation.torch.what: parent_only`` (the model's forward
  recorded) and ``parent_and_children`` with ``children_mode: lightweight``
  (each layer recorded too), interleaved in one process per setting; min
  per forward over repeats.  Tensor inspection is for the first epoch only,
  so the steady state measured here has none (both sides).
* Telemetry: one ``Telemetry().capture()`` snapshot (psutil; cpu, mem and
  process_info, as Flowcept's parts), per call.
* Observability adapters: the sqlite adapter over 50,000 new rows (read,
  encode, intent, push into its ring, checkpoint per group of 1,000; three
  passes of at most 20,000), records per second.
* Side by side (unless --no-ref): flowcept 1.0.3's ``FlowceptDaskWorkerAdapter``
  and ``flowcept_torch`` (parent_only, and parent_and_children with the
  lightweight children mode) on the same workloads, offline, in its own venv
  (reference/setup_ref_venv.sh, plus torch 2.13.0 and dask installed there).

Each benchmark in its own subprocess with its own run/shm dirs; records drain
into the embedded LMDB store.  Prints one JSON line per measurement, then a
Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child_dask(n: int, repeats: int) -> dict:
    """Both sides in one cluster, alternating (plugin registered, then
    unregistered), so that a load change on the machine hits both alike."""
    from distributed import Client, LocalCluster
    from flowcept import Flowcept
    from flowcept.adapters.dask import FlowceptDaskWorkerAdapter
    best = {False: float("inf"), True: float("inf")}
    with Flowcept(workflow_name="bench-dask") as fc:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cl, Client(cl) as c:
            c.gather(c.map(_noop, range(50), key=[f"warm-{i}" for i in range(50)]))
            for r in range(repeats):
                for plugin in (False, True):
                    if plugin:
                        c.register_plugin(FlowceptDaskWorkerAdapter(fc.session))
                    keys = [f"t{r}-{int(plugin)}-{i}" for i in range(n)]
                    t0 = time.perf_counter()
                    c.gather(c.map(_noop, range(n), key=keys))
                    best[plugin] = min(best[plugin], (time.perf_counter() - t0) / n)
                    if plugin:
                        c.unregister_worker_plugin(FlowceptDaskWorkerAdapter.name)
    return {"plain_us": best[False] * 1e6, "captured_us": best[True] * 1e6}


def _noop(x):
    return x


def child_torch(n: int, repeats: int) -> dict:
    """plain and recorded (as the settings file in FLOWCEPT_SETTINGS_PATH
    says), interleaved per repeat."""
    import torch
    from torch import nn
    from flowcept import Flowcept
    from flowcept.instrumentation.flowcept_torch import flowcept_torch
    torch.set_num_threads(1)

    class MLP(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.l1, self.a, self.l2 = nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)

        def forward(self, x):
            return self.l2(self.a(self.l1(x)))

    Traced = flowcept_torch(MLP)
    x = torch.randn(32, 64)
    best = {"plain": float("inf"), "traced": float("inf")}
    with Flowcept(workflow_name="bench-torch"), torch.no_grad():
        models = {"plain": MLP(), "traced": Traced()}
        for m in models.values():   # past the first epoch (no tensor inspection), as 1.0.3 below
            if hasattr(m, "new_epoch"):
                m.new_epoch(None)
                m.new_epoch(None)
        for m in models.values():
            for _ in range(50):
                m(x)
        for _ in range(repeats):
            for mode, m in models.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    m(x)
                best[mode] = min(best[mode], (time.perf_counter() - t0) / n)
    return {k: v * 1e6 for k, v in best.items()}


def child_telemetry(n: int, repeats: int) -> dict:
    from flowcept.adapters.telemetry import Telemetry
    t = Telemetry({"cpu": True, "mem": True, "process_info": True})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            t.capture()
        best = min(best, (time.perf_counter() - t0) / n)
    return {"per_snapshot_us": best * 1e6}


def child_sqlite(n: int, repeats: int) -> dict:
    """The adapter's passes over n new rows (a fresh checkpoint each repeat)."""
    import sqlite3
    from flowcept.adapters.sqlite import SqliteAdapter
    from flowcept.capture import session as runtime
    from flowcept.config import load_config
    d = tempfile.mkdtemp()
    db = os.path.join(d, "app.db")
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT, value REAL)")
    c.executemany("INSERT INTO jobs VALUES (?, ?, ?)", [(i, f"state-{i}", i / 7) for i in range(1, n + 1)])
    c.commit()
    c.close()
    s = runtime.start_local_session(load_config())
    best = float("inf")
    for r in range(repeats):
        a = SqliteAdapter(s, path=db, table="jobs", checkpoint=os.path.join(d, f"ck{r}.json")).start()
        t0 = time.perf_counter()
        got = 0
        while got < n:   # passes of at most PASS_ITEMS records
            step = a.poll()
            assert step, a.last_error
            got += step
        best = min(best, time.perf_counter() - t0)
        a.stop()
    runtime.end_session()
    return {"records_per_s": n / best}


TORCH_SETTINGS = """
instrumentation:
  enabled: true
  torch: {what: %s, children_mode: lightweight, epoch_loop: lightweight, batch_loop: lightweight,
          capture_epochs_at_every: 1, register_workflow: true}
"""


# flowcept 1.0.3's own instrumentation of the same workloads, run in its own venv
# (same import name as ours); settings: offline, instrumentation on.
REF_SETTINGS = """
project: {dump_buffer: {enabled: false}, enrich_messages: false, db_flush_mode: offline}
log: {log_file_level: disable, log_stream_level: disable}
mq: {enabled: false}
kv_db: {enabled: false}
databases: {mongodb: {enabled: false}, lmdb: {enabled: false}}
instrumentation:
  enabled: true
  torch: {what: %s, children_mode: lightweight, capture_at_every: 1}
adapters:
  dask: {kind: dask, worker_should_get_input: true, worker_should_get_output: true}
"""

REF_SCRIPT = r'''
import json, sys, time
kind, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from flowcept import Flowcept
def _noop(x):
    return x
if kind == "dask":
    from distributed import Client, LocalCluster
    from flowcept.flowceptor.adapters.dask.dask_plugins import FlowceptDaskWorkerAdapter
    best = {False: float("inf"), True: float("inf")}
    with Flowcept(check_safe_stops=False, start_persistence=False, save_workflow=False):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl, Client(cl) as c:
            c.gather(c.map(_noop, range(50), key=[f"warm-{i}" for i in range(50)]))
            for r in range(repeats):
                for plugin in (False, True):
                    if plugin:
                        c.register_plugin(FlowceptDaskWorkerAdapter(), name="fc-ref")
                    keys = [f"t{r}-{int(plugin)}-{i}" for i in range(n)]
                    t0 = time.perf_counter()
                    c.gather(c.map(_noop, range(n), key=keys))
                    best[plugin] = min(best[plugin], (time.perf_counter() - t0) / n)
                    if plugin:
                        c.unregister_worker_plugin("fc-ref")
    print(json.dumps({"plain_us": best[False] * 1e6, "captured_us": best[True] * 1e6}))
else:
    import torch
    from torch import nn
    from flowcept.instrumentation.flowcept_torch import flowcept_torch
    torch.set_num_threads(1)
    class MLP(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.l1, self.a, self.l2 = nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        def forward(self, x):
            return self.l2(self.a(self.l1(x)))
    Traced = flowcept_torch(MLP)
    x = torch.randn(32, 64)
    best = {"plain": float("inf"), "traced": float("inf")}
    with Flowcept(check_safe_stops=False, start_persistence=False, save_workflow=False), torch.no_grad():
        models = {"plain": MLP(), "traced": Traced()}
        models["traced"].new_epoch("e0")   # past the first epoch (no tensor inspection)
        models["traced"].new_epoch("e1")
        for m in models.values():
            for _ in range(50):
                m(x)
        for _ in range(repeats):
            for mode, m in models.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    m(x)
                best[mode] = min(best[mode], (time.perf_counter() - t0) / n)
    print(json.dumps({k: v * 1e6 for k, v in best.items()}))
'''


def run_reference(kind: str, n: int, repeats: int, torch_what: str = "parent_only") -> dict:
    """flowcept 1.0.3 on the same workload (its venv made by
    reference/setup_ref_venv.sh, plus torch and dask), or {"error": ...}."""
    try:
        setup = subprocess.run(["bash", os.path.join(HERE, "reference", "setup_ref_venv.sh")],
                               capture_output=True, text=True, timeout=900)
        if setup.returncode != 0:
            return {"error": "reference venv setup failed: " + setup.stderr.strip()[-300:]}
        py = setup.stdout.strip().splitlines()[-1]
        need = subprocess.run([py, "-c", "import torch, distributed"], capture_output=True, timeout=120)
        if need.returncode != 0:
            inst = subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0",
                                   "dask[distributed]"], capture_output=True, text=True, timeout=900)
            if inst.returncode != 0:
                return {"error": "installing torch/dask in the reference venv failed"}
        with tempfile.TemporaryDirectory() as d:
            settings = os.path.join(d, "settings.yaml")
            with open(settings, "w") as f:
                f.write(REF_SETTINGS % torch_what)
            script = os.path.join(d, "ref_adapters.py")
            with open(script, "w") as f:
                f.write(REF_SCRIPT)
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
            env["FLOWCEPT_SETTINGS_PATH"] = settings
            out = subprocess.run([py, script, kind, str(n), str(repeats)], capture_output=True,
                                 text=True, timeout=900, cwd=d, env=env)
        if out.returncode != 0:
            return {"error": f"flowcept 1.0.3 {kind} failed: " + out.stderr.strip()[-400:]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": repr(e)}


def run_child(*args, settings: str = "") -> dict:
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
        env.update(FLOWCEPT_RUN_DIR=os.path.join(d, "runs"), FLOWCEPT_SHM_DIR=os.path.join(d, "shm"))
        os.makedirs(env["FLOWCEPT_SHM_DIR"])
        if settings:   # Flowcept's settings file (how @flowcept_torch is configured)
            env["FLOWCEPT_SETTINGS_PATH"] = os.path.join(d, "settings.yaml")
            with open(env["FLOWCEPT_SETTINGS_PATH"], "w") as f:
                f.write(settings)
        out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], env=env,
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dask-tasks", type=int, default=1000)
    ap.add_argument("--forwards", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ref", action="store_true", help="skip flowcept 1.0.3 side by side")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, n, rep, *rest = a.child
        n, rep = int(n), int(rep)
        if kind == "dask":
            r = child_dask(n, rep)
        elif kind == "torch":
            r = child_torch(n, rep)
        elif kind == "sqlite":
            r = child_sqlite(n, rep)
        else:
            r = child_telemetry(n, rep)
        print(json.dumps(r))
        return
    rows = []
    d = run_child("dask", a.dask_tasks, a.repeats)
    rows.append(("Dask task (no-op, in-process worker)", d["plain_us"], d["captured_us"]))
    t = run_child("torch", a.forwards, a.repeats, settings=TORCH_SETTINGS % "parent_only")
    rows.append(("torch forward, parent_only", t["plain"], t["traced"]))
    t = run_child("torch", a.forwards, a.repeats, settings=TORCH_SETTINGS % "parent_and_children")
    rows.append(("torch forward, parent_and_children lightweight (4 records)", t["plain"], t["traced"]))
    tel = run_child("telemetry", 2000, a.repeats)["per_snapshot_us"]
    sq = run_child("sqlite", 50000, a.repeats)["records_per_s"]
    if not a.no_ref:
        rd = run_reference("dask", a.dask_tasks, a.repeats)
        rt = run_reference("torch", a.forwards, a.repeats, "parent_only")
        rc = run_reference("torch", a.forwards, a.repeats, "parent_and_children")
        for name, r, base, cap in (("flowcept 1.0.3: Dask task (FlowceptDaskWorkerAdapter)", rd,
                                    "plain_us", "captured_us"),
                                   ("flowcept 1.0.3: torch forward, parent_only", rt, "plain", "traced"),
                                   ("flowcept 1.0.3: torch forward, parent_and_children lightweight",
                                    rc, "plain", "traced")):
            if "error" in r:
                print(json.dumps({"what": name, "error": r["error"]}))
            else:
                rows.append((name, r[base], r[cap]))
    for name, base, cap in rows:
        print(json.dumps({"what": name, "plain_us": round(base, 2), "captured_us": round(cap, 2),
                          "added_us": round(cap - base, 2)}))
    print(json.dumps({"what": "telemetry snapshot (psutil)", "us": round(tel, 2)}))
    print("\n| what | without capture (µs) | with capture (µs) | added (µs) |\n| --- | --- | --- | --- |")
    for name, base, cap in rows:
        print(f"| {name} | {base:.1f} | {cap:.1f} | {cap - base:+.1f} |")
    print(f"| telemetry snapshot at a task's start or end | — | {tel:.1f} | {tel:+.1f} |")
    print(json.dumps({"what": "sqlite adapter, 50,000 new rows", "records_per_s": round(sq)}))
    print(f"\nsqlite adapter, 50,000 new rows (3 passes): {sq:,.0f} records/s")


if __name__ == "__main__":
    main()
