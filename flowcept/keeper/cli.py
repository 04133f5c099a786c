"""``flowcept keeper ...``: run a keeper, show its status, replay a spool."""
from __future__ import annotations

import json
import logging
import sys


def _config(args, **extra):
    """The configuration: settings and environment, then -o KEY=VALUE, then flags."""
    from flowcept.config import load_config
    overrides = dict(_options(getattr(args, "option", None) or []))
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return load_config(**overrides)


def _options(pairs):
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-o {text!r}: expected KEY=VALUE, e.g. -o redis_group=keepers")
        yield key.strip(), value


def _keeper_transport(cfg, name):
    """The transport whose source the keeper reads: --transport, else the one
    whose URL scheme the URL has, else the configured one (one-line error if
    it has no keeper side)."""
    from flowcept import registry
    from flowcept.transport import source_names
    if not name and cfg.transport not in source_names() and "://" in cfg.transport_url:
        scheme = cfg.transport_url.split("://", 1)[0]
        for candidate in source_names():
            if scheme in getattr(registry.load("transport", candidate), "url_schemes", ()):
                name = candidate
                break
    name = name or cfg.transport
    if name not in source_names():
        raise ValueError(f"transport {name!r} has no keeper side: pass --transport with one of "
                         f"{', '.join(source_names())}")
    return name


def _store_specs(cfg, args):
    """[(backend, location)]: each --store takes the next --store-dir or
    --store-url, by the kind of location its backend uses."""
    from flowcept import registry
    pools = {"dir": list(args.store_dir or []), "url": list(args.store_url or [])}
    specs = []
    for name in args.store or [cfg.store]:
        kind = getattr(registry.load("store", name), "location_kind", "dir")
        if not pools[kind]:
            raise ValueError(f"store {name!r} needs its own --store-{kind}")
        specs.append((name, pools[kind].pop(0)))
    return specs


def _cmd_run(args) -> int:
    from flowcept.keeper import Keeper
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = _config(args, transport_url=args.url, keeper_max_frame_bytes=args.max_frame_bytes,
                  keeper_claim_idle_ms=args.claim_idle_ms)
    cfg = cfg.replace(transport=_keeper_transport(cfg, args.transport))
    if not args.store_dir:
        raise ValueError("keeper run needs --store-dir (its quarantine and status files go there)")
    keeper = Keeper(cfg, store_dir=args.store_dir[0], name=args.name, count=args.count,
                    status_interval=args.status_interval, stores=_store_specs(cfg, args))
    from flowcept.errors import TransportUnavailable
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
    cfg = None
    if args.url or args.transport:
        cfg = _config(args, transport_url=args.url)
        cfg = cfg.replace(transport=_keeper_transport(cfg, args.transport))
    st = read_status(args.store_dir, cfg)
    print(json.dumps(st, indent=1, sort_keys=True) if args.json else format_status(st))
    return 0


def _cmd_replay(args) -> int:
    from flowcept.node.spool import replay_dir
    from flowcept.transport import JobInfo, TransportUnavailable, open_transport
    from flowcept.record import job as jobs
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
    p = sub.add_parser("keeper", help="run a keeper (transport -> stores), show status, replay "
                       "spools", description="The keeper consumes batches from a transport's keeper "
                       "side, validates them, writes them to one or more stores and acknowledges "
                       "them only after every store committed.")
    ks = p.add_subparsers(dest="keeper_command", metavar="ACTION")
    ks.required = True

    r = ks.add_parser("run", help="consume batches into one or more stores until SIGTERM/SIGINT",
                      description="Reads batches from the transport's keeper side (a consumer "
                                  "group member), validates them, writes them to every --store "
                                  "and acknowledges them only after all committed.  Backend "
                                  "options go in -o KEY=VALUE (see `flowcept config`).")
    r.add_argument("--transport", default=None, metavar="NAME",
                   help="transport to read (default: config transport; see `flowcept config`)")
    r.add_argument("--url", default=None,
                   help="the transport URL, e.g. redis://[:password@]host:port/db; comma-separated "
                        "for several instances (default: config transport_url)")
    r.add_argument("--store", action="append", metavar="NAME",
                   help="a store to write (repeat for several; default: config store)")
    r.add_argument("--store-dir", action="append", metavar="DIR",
                   help="directory of a directory store (and of the quarantine and status files)")
    r.add_argument("--store-url", action="append", metavar="URL", help="URL of a URL store")
    r.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a configuration key, e.g. -o redis_group=keepers -o lmdb_shards=8")
    r.add_argument("--name", default=None, help="consumer name (default: host-pid); restart a "
                   "crashed keeper under the same name to take its pending batches at once")
    r.add_argument("--count", type=int, default=16, help="entries per read")
    r.add_argument("--max-frame-bytes", type=int, default=None,
                   help="larger frames are quarantined (default: config keeper_max_frame_bytes)")
    r.add_argument("--claim-idle-ms", type=int, default=None,
                   help="take over another keeper's pending batches after this idle time")
    r.add_argument("--status-interval", type=float, default=1.0)
    r.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without input (batch use)")
    r.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    r.set_defaults(func=_cmd_run)

    s = ks.add_parser("status", help="batches/records in, rejected, lag, shards of a store")
    s.add_argument("--store-dir", required=True)
    s.add_argument("--transport", default=None, help="also ask this transport's sources (lag)")
    s.add_argument("--url", default=None, help="the transport URL to ask")
    s.add_argument("-o", "--option", action="append", metavar="KEY=VALUE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_status)

    y = ks.add_parser("replay", help="publish the batches left in a spool directory",
                      description="Publishes every spooled batch under SPOOL_DIR (left there when "
                                  "the transport was down at the end of a job) and removes the "
                                  "files that were flushed.  Safe to repeat.")
    y.add_argument("--spool-dir", required=True)
    y.add_argument("--transport", default=None, help="default: config transport")
    y.add_argument("--url", default=None)
    y.add_argument("-o", "--option", action="append", metavar="KEY=VALUE")
    y.set_defaults(func=_cmd_replay)
