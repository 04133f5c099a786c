"""``flowcept keeper ...``: run a keeper, show its status, replay a spool."""
from __future__ import annotations

import json
import logging
import sys


def _config(args, **extra):
    from flowcept.config import load_config
    overrides = {k: v for k, v in extra.items() if v is not None}
    return load_config(**overrides)


def _cmd_run(args) -> int:
    from flowcept.keeper import Keeper
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = _config(args, transport=args.transport, transport_url=args.url, store_dir=args.store_dir,
                  lmdb_shards=args.shards, redis_group=args.group, redis_stream=args.stream,
                  keeper_max_frame_bytes=args.max_frame_bytes,
                  keeper_claim_idle_ms=args.claim_idle_ms,
                  mofka_group_file=args.mofka_group_file, mofka_topic=args.mofka_topic,
                  mofka_protocol=args.mofka_protocol)
    keeper = Keeper(cfg, name=args.name, count=args.count,
                    status_interval=args.status_interval, delete_acked=not args.keep_acked)
    from flowcept.transport import TransportUnavailable
    try:
        rc = keeper.run(max_idle_s=args.exit_when_idle)
    except TransportUnavailable as e:
        print(f"flowcept keeper run: error: {e}", file=sys.stderr)
        return 3
    c = keeper.counts
    print(f"keeper {keeper.name}: {c['batches_in']} batches, {c['records_in']} records stored, "
          f"{c['duplicates']} duplicates skipped, {c['rejected']} rejected", flush=True)
    return rc


def _cmd_status(args) -> int:
    from flowcept.keeper import format_status, read_status
    import os
    if not os.path.isdir(args.store_dir):
        raise FileNotFoundError(f"{args.store_dir}: no such store directory")
    cfg = _config(args)
    st = read_status(args.store_dir, url=args.url, stream=args.stream or cfg.redis_stream,
                     group=args.group or cfg.redis_group)
    print(json.dumps(st, indent=1, sort_keys=True) if args.json else format_status(st))
    return 0


def _cmd_replay(args) -> int:
    from flowcept.spool import replay_dir
    from flowcept.transport import JobInfo, TransportUnavailable, open_transport
    from flowcept import jobs
    cfg = _config(args, transport=args.transport, transport_url=args.url)
    job = JobInfo(job_name="replay", job_id=0, node=jobs.node_name(), run_dir=args.spool_dir)
    try:
        tr = open_transport(cfg.transport, cfg, job)
        batches, records, left = replay_dir(args.spool_dir, tr)
        tr.close()
    except TransportUnavailable as e:
        print(f"flowcept keeper replay: error: {e}", file=sys.stderr)
        return 3
    print(f"replayed {batches} batches ({records} records) from {args.spool_dir}; {left} left")
    return 0 if left == 0 else 1


def register(sub) -> None:
    p = sub.add_parser("keeper", help="run a keeper (transport -> LMDB), show status, replay spools",
                       description="The keeper consumes batches from Redis Streams (or Mofka), "
                                   "validates them, writes them to sharded LMDB and acknowledges "
                                   "them only after the commit.")
    ks = p.add_subparsers(dest="keeper_command", metavar="ACTION")
    ks.required = True

    r = ks.add_parser("run", help="consume batches into a store until SIGTERM/SIGINT")
    r.add_argument("--transport", default="redis", choices=("redis", "mofka"))
    r.add_argument("--url", default=None,
                   help="redis://[:password@]host:port/db (or rediss://); comma-separated for "
                        "several instances (default: config transport_url)")
    r.add_argument("--store-dir", required=True, help="the LMDB store directory")
    r.add_argument("--shards", type=int, default=None, help="LMDB shards of a new store")
    r.add_argument("--group", default=None, help="consumer group (default: config redis_group)")
    r.add_argument("--name", default=None, help="consumer name (default: host-pid); restart a "
                   "crashed keeper under the same name to take its pending batches at once")
    r.add_argument("--stream", default=None, help="stream name (default: config redis_stream)")
    r.add_argument("--count", type=int, default=16, help="entries per read")
    r.add_argument("--max-frame-bytes", type=int, default=None,
                   help="larger frames are quarantined (default: config keeper_max_frame_bytes)")
    r.add_argument("--claim-idle-ms", type=int, default=None,
                   help="take over another keeper's pending batches after this idle time")
    r.add_argument("--keep-acked", action="store_true",
                   help="keep acknowledged entries in the stream (default: XDEL after XACK)")
    r.add_argument("--status-interval", type=float, default=1.0)
    r.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without input (batch use)")
    r.add_argument("--mofka-group-file", default=None)
    r.add_argument("--mofka-topic", default=None)
    r.add_argument("--mofka-protocol", default=None)
    r.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    r.set_defaults(func=_cmd_run)

    s = ks.add_parser("status", help="batches/records in, rejected, lag, shards of a store")
    s.add_argument("--store-dir", required=True)
    s.add_argument("--url", default=None, help="also query the Redis stream(s) (XINFO)")
    s.add_argument("--stream", default=None)
    s.add_argument("--group", default=None)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_status)

    y = ks.add_parser("replay", help="publish the batches left in a spool directory",
                      description="Publishes every spooled batch under SPOOL_DIR (left there when "
                                  "the transport was down at the end of a job) and removes the "
                                  "files that were flushed.  Safe to repeat.")
    y.add_argument("--spool-dir", required=True)
    y.add_argument("--transport", default="redis", choices=("redis", "mofka"))
    y.add_argument("--url", default=None)
    y.set_defaults(func=_cmd_replay)
