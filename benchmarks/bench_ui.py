"""What the browser UI's workflow page costs the server and the network, over real HTTP.

    python benchmarks/bench_ui.py                  # 100,000 tasks, 16 ranks
    python benchmarks/bench_ui.py 1000000 --ranks 64

Builds a synthetic store through the real write path (bench_archive.build_store), starts
`flowcept serve` on it, and times each request the workflow and task pages make (runs,
summary, statistics by activity and by rank, failure groups, the timeline for a
1,200-pixel-wide picture, the first page of tasks, a lineage graph), with the bytes each
answer has.  Side by side, in the same run: what a page without server-side binning
would have to fetch for the same picture (every task's rank, start, end, status and
activity, streamed as JSON lines).  Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def fetch(url: str):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=3600) as r:
        body = r.read()
    return time.perf_counter() - t, body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=100_000, help="tasks (default 100000)")
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="times each request is made (the best is kept)")
    ap.add_argument("--dir", default=None, help="where the store goes (default: a temporary dir)")
    ap.add_argument("--no-lineage", action="store_true", help="leave out the lineage graph (minutes on "
                                                                "a large store: the lineage walk reads every payload)")
    args = ap.parse_args(argv)
    from bench_archive import build_store
    work = args.dir or tempfile.mkdtemp(prefix="bench-ui-")
    store = os.path.join(work, "store")
    shutil.rmtree(store, ignore_errors=True)
    built = build_store(store, args.n, ranks=args.ranks)
    print(json.dumps({"what": "store built", "tasks": args.n, "ranks": args.ranks, "seconds": round(built, 2),
                      "load": os.getloadavg()}), flush=True)
    with socket.create_server(("127.0.0.1", 0)) as s:   # a free port for the server
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    proc = subprocess.Popen([sys.executable, "-m", "flowcept.access.cli", "serve", store, "--port", str(port),
                             "--query-timeout", "3600", "--max-concurrency", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                fetch(base + "/health")
                break
            except OSError:
                time.sleep(0.1)
        runs = json.loads(fetch(base + "/api/v1/runs")[1])
        wf = runs["items"][0]["workflow_id"]
        flt = urllib.parse.quote(json.dumps({"workflow_id": wf}))
        first = json.loads(fetch(f"{base}/api/v1/tasks?limit=1&projection=task_id")[1])["items"][0]["task_id"]
        requests = [
            ("runs list", "/api/v1/runs"),
            ("workflow summary", f"/api/v1/workflows/summary?workflow_id={wf}"),
            ("durations per activity", f"/api/v1/stats?by=activity&filter={flt}"),
            ("load per rank", f"/api/v1/stats?by=rank&filter={flt}"),
            ("failure groups", f"/api/v1/failures/groups?filter={flt}"),
            ("timeline, 1200 bins", f"/api/v1/timeline?filter={flt}&bins=1200&max_rows=64"),
            ("first page of 50 tasks", f"/api/v1/tasks?filter={flt}&limit=50"),
            ("lineage graph", f"/api/v1/tasks/{first}/graph?max_nodes=12"),
            ("without binning: every task for the same picture",
             f"/api/v1/tasks/stream?filter={flt}&projection=rank,start_ns,end_ns,status,activity_id"),
        ]
        for name, path in requests:
            if args.no_lineage and name == "lineage graph":
                continue
            best, size = None, 0
            for _ in range(args.repeat):
                s, body = fetch(base + path)
                best = s if best is None else min(best, s)
                size = len(body)
            print(json.dumps({"what": name, "tasks": args.n, "seconds": round(best, 3), "bytes": size,
                              "load": os.getloadavg()}), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
