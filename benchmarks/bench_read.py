"""Read-back benchmarks: the read path (flowcept.query.engine) on a job of N
tasks (default 10,000,000; 16 ranks, 1 % errors, used/generated payloads),
from its LMDB store and its HDF5 archive, side by side with h5py + pandas
and DuckDB in the same run.

    python benchmarks/bench_read.py                       # 10 M tasks, built here, removed after
    python benchmarks/bench_read.py 2000000 --dir D --keep
    python benchmarks/bench_read.py --only filter,stats   # some of: filter, jsonl, stats, serve, parquet, lineage

Every measurement first checks, on a small job (20,000 tasks), that the
read path's answers equal the row-by-row reference (each record decoded
alone, each filter matched document by document).  Prints one JSON line per
measurement and a table at the end.  The store is written through the real
write path (frames as a leader packs them, LmdbStore.put_batches) and the
archive by `flowcept compact`.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

FILTERS = {   # the filters of the goals table: status, rank, activity, time range
    "status": {"status": "ERROR"},
    "rank": {"rank": {"$in": [3, 11]}},
    "activity": {"activity_id": "residual"},
    "time": None,   # set from the job: a 1 % slice of its time span
}
ROWS = []


def emit(**kw):
    kw.setdefault("load", os.getloadavg()[0])
    ROWS.append(kw)
    print(json.dumps(kw), flush=True)


def best(fn, repeats=3):
    """(min seconds, result) over repeats (warm: the first run warms caches)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def build(base: str, n: int, keep_existing: bool):
    from framegen import build_job_store
    run = os.path.join(base, "runs", f"job{n}")
    h5 = os.path.join(base, f"job{n}.h5")
    if not (keep_existing and os.path.exists(h5)):
        shutil.rmtree(run, ignore_errors=True)
        t = time.perf_counter()
        build_job_store(os.path.join(run, "store", "node0"), n, batch_records=16384)
        built = time.perf_counter() - t
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flowcept", "compact", run, "-o", h5], check=True,
                       env=env, capture_output=True)
        emit(what="build", tasks=n, store_s=round(built, 2), compact_s=round(time.perf_counter() - t, 2))
    return run, h5


def time_filter(n: int, h5: str):
    import flowcept.archive as fa
    with fa.open(h5) as a:
        s = a._column("start_ns")
        lo = int(s[0]) + (int(s[-1]) - int(s[0])) // 2
        hi = lo + (int(s[-1]) - int(s[0])) // 100
    return {"started_at": {"$gte": lo / 1e9, "$lt": hi / 1e9}}


# -- the row-by-row reference ---------------------------------------------------------------
def reference_docs(run: str):
    """Every task, each record decoded alone (Batch.payload_of, task_dict): the slow, obvious way."""
    from flowcept.native.batch import Batch
    from flowcept.query.tasks import find_stores, task_dict
    from flowcept.record.layout import FLAG_WORKFLOW
    from flowcept.store import open_store_at
    docs = []
    for sp in find_stores(run):
        with open_store_at(sp) as st:
            for _k, frame in st.scan():
                b = Batch(frame, check=False)
                strings = b.strings
                for i in range(len(b)):
                    r = b.records[i]
                    if int(r["flags"]) & FLAG_WORKFLOW:
                        continue
                    docs.append(task_dict(r, strings[int(r["activity_id"])], strings[0][5:], b.payload_of(i)))
    docs.sort(key=lambda d: (d["start_ns"], d["task_id"]))
    return docs


def check_small(base: str):
    """The read path's answers equal the reference on a small job (every benchmark's question)."""
    from flowcept.access.core import Access
    from flowcept.query.documents import dumps_lines
    from flowcept.query.filters import matches
    run, h5 = build(base, 20_000, False)
    ref = reference_docs(run)
    FILTERS["time"] = time_filter(20_000, h5)
    for spec in (run, h5):
        a = Access([spec], query_timeout=0)
        try:
            for name, flt in FILTERS.items():
                want = [d for d in ref if matches(d, flt)]
                page = a.tasks(filter=flt, limit=1000, count=True)
                assert page["total"] == len(want) and page["items"] == want[:1000], (spec, name)
                assert a.tasks_json(filter=flt, limit=1000) == json.dumps(
                    a.tasks(filter=flt, limit=1000), ensure_ascii=False, separators=(",", ":")).encode()
            assert list(a.iter_tasks(max_stream=None)) == ref
            assert b"".join(a.iter_json(max_stream=None)) == dumps_lines(ref)
            for by, key in (("activity", "activity_id"), ("rank", "rank")):
                got = a.stats(by)["items"]
                for row in got:
                    d = np.array([x["end_ns"] - x["start_ns"] for x in ref if x[key] == row[by]]) / 1e9
                    assert row["count"] == len(d)
                    assert np.allclose([row["p50_s"], row["p95_s"], row["p99_s"]],
                                       np.percentile(d, [50, 95, 99]), rtol=0, atol=1e-12)
        finally:
            a.close()
    import pandas as pd
    from flowcept.access.parquet import export_parquet
    p = export_parquet(h5, os.path.join(base, "small.parquet"), progress=False)
    df = pd.read_parquet(p)
    assert df["task_id"].tolist() == [d["task_id"] for d in ref]
    assert [json.loads(x) for x in df["used"]] == [d["used"] for d in ref]
    emit(what="reference check", tasks=len(ref), ok=True)


# -- the measurements -----------------------------------------------------------------------
def bench_filter(run, h5, n):
    from flowcept.access.core import Access
    from flowcept.query import engine
    from flowcept.query.documents import parse_sort
    import h5py
    import pandas as pd
    FILTERS["time"] = time_filter(n, h5)
    cols = ["status", "rank", "activity", "start_ns"]
    with h5py.File(h5, "r") as f:   # h5py + pandas: the columns in memory, then a boolean mask
        t = time.perf_counter()
        df = pd.DataFrame({c: f["tasks"][c][()] for c in cols})
        names = f["strings"].asstr()[()]
        read_s = time.perf_counter() - t
    residual = int(np.flatnonzero(names == "residual")[0])
    tf = FILTERS["time"]["started_at"]
    pandas_masks = {"status": lambda: int((df["status"] == 1).sum()),
                    "rank": lambda: int(df["rank"].isin([3, 11]).sum()),
                    "activity": lambda: int((df["activity"] == residual).sum()),
                    "time": lambda: int(((df["start_ns"] / 1e9 >= tf["$gte"]) &
                                         (df["start_ns"] / 1e9 < tf["$lt"])).sum())}
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        a = Access([spec], query_timeout=0)
        table = a.source(None).table
        try:
            for name, flt in FILTERS.items():
                refs = table.refs(flt)
                evaluated = sum(r.n for r in refs)
                s, cnt = best(lambda: engine.count(table, flt))
                # the page itself, not Access's page cache: 1,000 matches in start order
                s1k, page = best(lambda: engine.page(table, flt, parse_sort("start_ns"), 1000))
                assert len(page[0]) == min(1000, cnt)
                ps, pcnt = best(pandas_masks[name])
                assert pcnt == cnt, (name, pcnt, cnt)
                emit(what="filter", source=kind, filter=name, matches=cnt, rows_evaluated=evaluated,
                     seconds=round(s, 4), rows_per_s=round(n / s), evaluated_per_s=round(evaluated / s),
                     first_1000_s=round(s1k, 4), pandas_s=round(ps, 4), pandas_rows_per_s=round(n / ps),
                     h5py_read_s=round(read_s, 3))
        finally:
            a.close()


def bench_jsonl(run, h5, n, base):
    """JSON lines of every task in one process: written from the columns in C (Access.iter_json)
    vs the documents then orjson (iter_pages + dumps_lines), the same bytes; then
    `flowcept query --all --format jsonl` of the tasks of 2 ranks (documents with used/generated)
    vs pandas to_json of the same rows (read with h5py, payloads decoded by msgpack)."""
    import h5py
    import msgpack
    import pandas as pd
    from flowcept.access.core import Access
    from flowcept.query.documents import dumps_lines
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        a = Access([spec], query_timeout=0)
        try:
            def c_lines():
                return sum(t.count(b"\n") for t in a.iter_json(max_stream=None))

            def py_lines():
                return sum(dumps_lines(p).count(b"\n") for p in a.iter_pages(max_stream=None))
            s_c, docs = best(c_lines, repeats=2)
            s_py, docs_py = best(py_lines, repeats=2)
            assert docs == docs_py == n
            emit(what="jsonl in process", source=kind, docs=docs, c_seconds=round(s_c, 2),
                 c_docs_per_s=round(docs / s_c), python_seconds=round(s_py, 2),
                 python_docs_per_s=round(docs / s_py), ratio=round(s_py / s_c, 2))
        finally:
            a.close()
    flt = {"rank": {"$in": [0, 1]}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    out = os.path.join(base, "dump.jsonl")
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        def dump():
            with open(out, "wb") as f:
                subprocess.run([sys.executable, "-m", "flowcept.access.cli", "query", spec, "--all",
                                "--format", "jsonl", "--query-timeout", "0", "-f", json.dumps(flt)],
                               check=True, stdout=f, env=env)
            with open(out, "rb") as f:
                return sum(1 for _ in f)
        s, docs = best(dump, repeats=2)
        emit(what="jsonl", source=kind, docs=docs, seconds=round(s, 2), docs_per_s=round(docs / s))
    with h5py.File(h5, "r") as f:
        t = f["tasks"]
        rank = t["rank"][()]
        sel = np.flatnonzero((rank == 0) | (rank == 1))
        cols = {c: t[c][()][sel] for c in ("task_id", "workflow_id", "parent_id", "activity", "status",
                                           "start_ns", "end_ns", "rank", "thread_id", "node",
                                           "payload_off", "payload_len")}
        blob = f["payloads"][()]
        names = f["strings"].asstr()[()]

    def pandas_dump():
        bodies = [msgpack.unpackb(blob[o:o + m].tobytes(), raw=False)
                  for o, m in zip(cols["payload_off"].tolist(), cols["payload_len"].tolist())]
        df = pd.DataFrame({"task_id": cols["task_id"], "workflow_id": cols["workflow_id"],
                           "parent_task_id": cols["parent_id"], "activity_id": names[cols["activity"]],
                           "status": cols["status"], "started_at": cols["start_ns"] / 1e9,
                           "ended_at": cols["end_ns"] / 1e9, "start_ns": cols["start_ns"],
                           "end_ns": cols["end_ns"], "rank": cols["rank"], "thread_id": cols["thread_id"],
                           "hostname": names[cols["node"]], "used": [b.get("used") for b in bodies],
                           "generated": [b.get("generated") for b in bodies]})
        buf = io.StringIO()
        df.to_json(buf, orient="records", lines=True)
        return len(df)
    s, docs = best(pandas_dump, repeats=2)
    emit(what="jsonl", source="pandas to_json (h5py read, msgpack decode)", docs=docs,
         seconds=round(s, 2), docs_per_s=round(docs / s))


def bench_stats(run, h5, n, base):
    from flowcept.access.core import Access
    import h5py
    import pandas as pd
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        a = Access([spec], query_timeout=0)
        try:
            for by in ("activity", "rank"):
                s, out = best(lambda: a.stats(by))
                emit(what="stats", source=kind, by=by, groups=len(out["items"]), seconds=round(s, 3))
        finally:
            a.close()
    with h5py.File(h5, "r") as f:
        t = f["tasks"]
        df = pd.DataFrame({"activity": t["activity"][()], "rank": t["rank"][()],
                           "dur": (t["end_ns"][()] - t["start_ns"][()]) / 1e9})
    for by in ("activity", "rank"):
        s, _ = best(lambda: df.groupby(by)["dur"].quantile([0.5, 0.95, 0.99]).unstack())
        emit(what="stats", source="pandas groupby quantile (in memory)", by=by, seconds=round(s, 3))
    try:
        import duckdb
        from flowcept.access.parquet import export_parquet
        pq = export_parquet(h5, os.path.join(base, "stats.parquet"), payload="none", progress=False)
        for by, col in (("activity", "activity_id"), ("rank", "rank")):
            sql = (f"SELECT {col}, count(*), quantile_cont(ended_at - started_at, [0.5, 0.95, 0.99]) "
                   f"FROM '{pq}' GROUP BY {col}")
            s, _ = best(lambda: duckdb.sql(sql).df())
            emit(what="stats", source="duckdb on parquet", by=by, seconds=round(s, 3))
    except ImportError:
        pass


def bench_serve(run, h5, n, clients=16, per_client=40):
    """First page of /api/v1/tasks?filter=...&limit=100 from a real `flowcept serve`, 16 clients
    at once: p50/p99 latency (same filter for all: its count is computed once; and a different
    filter for each request)."""
    import socket
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen([sys.executable, "-m", "flowcept.access.cli", "serve", spec, "--port",
                                 str(port), "--query-timeout", "60", "--max-concurrency", "16"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)

            def get(flt):   # a first page: total is not counted (null unless already known)
                url = f"{base}/api/v1/tasks?limit=100&filter={urllib.parse.quote(json.dumps(flt))}"
                t = time.perf_counter()
                with urllib.request.urlopen(url, timeout=120) as r:
                    body = json.loads(r.read())
                assert body["count"] == 100 or (body["count"] < 100 and body["next_cursor"] is None)
                return time.perf_counter() - t
            get({"status": "ERROR"})   # warm: columns and count of the filter

            def client(i, distinct):
                out = []
                for k in range(4 if distinct else per_client):
                    flt = ({"status": "ERROR", "rank": i,
                            "activity_id": ["timestep", "diffuse", "residual", "exchange_halos"][k]}
                           if distinct else {"status": "ERROR"})
                    out.append(get(flt))
                return out
            for distinct in (False, True):
                with cf.ThreadPoolExecutor(clients) as pool:
                    lat = sorted(x for part in pool.map(lambda i: client(i, distinct), range(clients))
                                 for x in part)

                emit(what="serve first page", source=kind, clients=clients, requests=len(lat),
                     filters="one per request (64 distinct)" if distinct else "the same",
                     p50_ms=round(1e3 * np.percentile(lat, 50), 1),
                     p99_ms=round(1e3 * np.percentile(lat, 99), 1))
        finally:
            proc.terminate()
            proc.wait(30)


def bench_lineage(run, h5, n):
    """The UI's lineage view of a task (Access.lineage both ways + lineage_graph): first
    (the source builds its lineage index on columns) and warm; the archive's own
    ancestors (the same index); beside them, up to 2 M tasks, the archive's Python walk
    over payloads decoded into dicts (flowcept.archive.lineage), which needs about 1.7 kB
    of memory per task (out of memory at 10 M on 24 GB)."""
    from flowcept.access.core import Access, lineage_graph
    from flowcept.archive.lineage import Lineage
    from lineage_reference import python_walk
    import flowcept.archive as fa
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        a = Access([spec], query_timeout=0)
        try:
            tid = a.tasks(limit=1, sort="-start_ns")["items"][0]["task_id"]
            t = time.perf_counter()
            g = lineage_graph(a, tid)
            first = time.perf_counter() - t
            warm, _ = best(lambda: lineage_graph(a, tid))
            emit(what="lineage view", source=kind, nodes=len(g["nodes"]), ancestors=g["ancestors"],
                 first_s=round(first, 2), warm_s=round(warm, 4))
        finally:
            a.close()
    with fa.open(h5) as arc:
        t = time.perf_counter()
        up = len(arc.ancestors(tid))
        first = time.perf_counter() - t
        warm, _ = best(lambda: len(arc.ancestors(tid)))
        emit(what="lineage view", source="archive.ancestors (the index)", ancestors=up,
             first_s=round(first, 2), warm_s=round(warm, 4))
        if arc.n > 2_000_000:
            return
        row = int(arc._index(tid))
        ref = Lineage(arc)
        t = time.perf_counter()
        up = len(python_walk(ref, row, True))
        first = time.perf_counter() - t
        warm, _ = best(lambda: len(python_walk(ref, row, True)))
        emit(what="lineage view", source="archive's Python walk (ancestors)", ancestors=up,
             first_s=round(first, 2), warm_s=round(warm, 4))


def bench_parquet(run, h5, n, base):
    """Every task with the columns only; the tasks of 2 ranks with the payloads as JSON text."""
    import pandas as pd
    from flowcept.access.parquet import write_parquet
    from flowcept.access.sources import open_source
    out = os.path.join(base, "export.parquet")
    two = {"rank": {"$in": [0, 1]}}
    for spec, kind in ((run, "lmdb"), (h5, "hdf5")):
        src = open_source(spec)
        try:
            for payload, cond in (("none", None), ("json", two)):
                s, rows = best(lambda: write_parquet(src.table, out, payload, cond), repeats=1)
                emit(what="parquet", source=kind, payload=payload, rows=rows, seconds=round(s, 2),
                     rows_per_s=round(rows / s))
        finally:
            src.close()
    df = pd.read_parquet(out)
    s, _ = best(lambda: df.to_parquet(os.path.join(base, "pandas.parquet")), repeats=1)
    emit(what="parquet", source="pandas to_parquet of the same DataFrame (json payload)", rows=len(df),
         seconds=round(s, 2), rows_per_s=round(len(df) / s))
    try:
        import duckdb
        t = time.perf_counter()
        same = duckdb.sql(f"SELECT * FROM '{out}'").df()
        emit(what="parquet read back", source="duckdb", rows=len(same),
             seconds=round(time.perf_counter() - t, 2),
             identical=bool(same.astype(object).where(same.notna(), None).equals(
                 df.astype(object).where(df.notna(), None))))
    except ImportError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="?", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None, help="where to build the job (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the job")
    ap.add_argument("--only", default="filter,jsonl,stats,serve,parquet,lineage")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="flowcept-bench-read-")
    os.makedirs(base, exist_ok=True)
    only = set(args.only.split(","))
    emit(what="machine", cpus=os.cpu_count(), python=sys.version.split()[0],
         date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), uptime=subprocess.run(
             ["uptime"], capture_output=True, text=True).stdout.strip())
    try:
        check_small(base)
        run, h5 = build(base, args.tasks, args.keep)
        if "filter" in only:
            bench_filter(run, h5, args.tasks)
        if "stats" in only:
            bench_stats(run, h5, args.tasks, base)
        if "serve" in only:
            bench_serve(run, h5, args.tasks)
        if "parquet" in only:
            bench_parquet(run, h5, args.tasks, base)
        if "jsonl" in only:
            bench_jsonl(run, h5, args.tasks, base)
        if "lineage" in only:
            bench_lineage(run, h5, args.tasks)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("\n" + "\n".join(json.dumps(r) for r in ROWS))


if __name__ == "__main__":
    main()
