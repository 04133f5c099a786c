"""``flowcept keeper ...``: run a keeper, show its status, replay a spool."""
from __future__ import annotations

import argparse
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


def _transport_by_url(cfg, name, want_source: bool, flag: str = "--transport"):
    """The transport a command uses: ``--transport`` if given (it must speak
    the URL's scheme), else the one whose scheme the URL has (as ``keeper
    run``, ``replay`` and ``bridge`` all do), else the configured one.
    ``want_source``: it must have a keeper side."""
    from flowcept import registry
    from flowcept.transport import source_names, transport_for_url
    url = cfg.transport_url
    if name:
        if "://" in url:
            schemes = getattr(registry.load("transport", name), "url_schemes", ())
            if url.split("://", 1)[0] not in schemes:
                raise ValueError(f"{flag} {name} does not speak {url.split('://', 1)[0]}:// URLs; "
                                 f"drop {flag} (the URL picks the transport) or fix --url")
    elif "://" in url:
        name = transport_for_url(url, want_source=want_source, prefer=cfg.transport)
    else:
        name = cfg.transport
    if want_source and name not in source_names():
        raise ValueError(f"transport {name!r} has no keeper side: pass --url with a hub URL "
                         f"(e.g. redis://host:6379/0) or --transport one of "
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


def _summary(name: str, c: dict) -> str:
    peer = f", {c['peer_duplicates']} found in peer stores" if c.get("peer_duplicates") else ""
    return (f"keeper {name}: {c['batches_in']} batches, {c['records_in']} records stored, "
            f"{c['duplicates']} duplicates skipped{peer}, {c['rejected']} rejected")


def _cmd_run(args) -> int:
    from flowcept.errors import TransportUnavailable
    from flowcept.keeper import Keeper
    from flowcept.keeper.service import default_name
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = _config(args, transport_url=args.url, keeper_max_frame_bytes=args.max_frame_bytes,
                  keeper_claim_idle_ms=args.claim_idle_ms)
    cfg = cfg.replace(transport=_transport_by_url(cfg, args.transport, want_source=True))
    if not args.store_dir:
        raise ValueError("keeper run needs --store-dir (its quarantine and status files go there)")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: give 1 or more (one per core to use)")
    specs = _store_specs(cfg, args)
    peers = list(args.peer_store or [])
    progress = False if args.no_progress else None
    if args.workers > 1:
        return _run_workers(args, cfg, specs, peers, progress)
    keeper = Keeper(cfg, store_dir=args.store_dir[0], name=args.name or default_name(),
                    count=args.count, status_interval=args.status_interval, stores=specs,
                    peers=peers, progress=progress, progress_interval=args.progress_interval)
    try:
        rc = keeper.run(max_idle_s=args.exit_when_idle, wait_s=args.wait)
    except TransportUnavailable as e:
        print(f"flowcept keeper run: error: {e}", file=sys.stderr)
        return 3
    print(_summary(keeper.name, keeper.counts), flush=True)
    return rc


def _run_workers(args, cfg, specs, peers, progress) -> int:
    """--workers N: N keeper processes, each with its own directories."""
    from flowcept import registry
    from flowcept.keeper import Keeper
    from flowcept.keeper.service import default_name
    from flowcept.keeper.workers import Workers, worker_dir, worker_name
    name = args.name or default_name()
    n = args.workers

    def dir_kind(backend):
        return getattr(registry.load("store", backend), "location_kind", "dir") == "dir"

    def specs_of(k):
        return [(b, worker_dir(loc, k) if dir_kind(b) else loc) for b, loc in specs]
    status_dirs = [worker_dir(args.store_dir[0], k) for k in range(n)]
    dir_specs = [[loc for b, loc in specs_of(k) if dir_kind(b)] for k in range(n)]

    def make_keeper(k):
        others = [d for j in range(n) if j != k for d in dir_specs[j]]
        return Keeper(cfg, store_dir=status_dirs[k], name=worker_name(name, k), count=args.count,
                      status_interval=args.status_interval, stores=specs_of(k),
                      peers=others + peers, progress=False,
                      lag_interval=(args.progress_interval if k == 0 and progress is not False
                                    else None))
    workers = Workers(make_keeper, n, name, status_dirs, progress=progress,
                      progress_interval=args.progress_interval)
    rc = workers.run(max_idle_s=args.exit_when_idle, wait_s=args.wait)
    c = workers.counts()
    print(_summary(f"{name} ({n} workers)", c), flush=True)
    if workers.failed:
        print(f"flowcept keeper run: error: {workers.failed}; start the same command again (same "
              "--name and --store-dir) to resume its pending batches", file=sys.stderr)
    return rc


def _cmd_status(args) -> int:
    from flowcept.keeper import format_status, read_status
    import os
    if not os.path.isdir(args.store_dir):
        raise FileNotFoundError(f"{args.store_dir}: no such store directory")
    cfg = None
    if args.url or args.transport:
        cfg = _config(args, transport_url=args.url)
        cfg = cfg.replace(transport=_transport_by_url(cfg, args.transport, want_source=True))
    st = read_status(args.store_dir, cfg)
    print(json.dumps(st, indent=1, sort_keys=True) if args.json else format_status(st))
    return 0


def _cmd_replay(args) -> int:
    """Replays spooled batches to the hub the user names, and removes a file
    only once the destination confirmed its batch (the spool checks that the
    destination's count of confirmed batches rose by what it published)."""
    import os
    from flowcept.node.spool import replay_dir
    from flowcept.record import job as jobs
    from flowcept.transport import JobInfo, TransportUnavailable, open_transport
    cfg = _config(args, transport_url=args.url, store_dir=args.store_dir)
    name = _transport_by_url(cfg, args.transport, want_source=False)
    if name == "embedded" and not args.store_dir:
        raise ValueError("keeper replay: say where the batches go: --url of the hub the keepers "
                         "read (e.g. --url redis://host:6379/0 or kafka://host:9092/flowcept), or "
                         "--transport embedded --store-dir DIR for a local store")
    if not os.path.isdir(args.spool_dir):
        raise FileNotFoundError(f"{args.spool_dir}: no such spool directory")
    cfg = cfg.replace(transport=name)
    job = JobInfo(job_name="replay", job_id=0, node=jobs.node_name(), run_dir=args.spool_dir)
    try:
        tr = open_transport(name, cfg, job)
        where = tr.destination()
        batches, records, left = replay_dir(args.spool_dir, tr)
        tr.close()
    except TransportUnavailable as e:
        print(f"flowcept keeper replay: error: {e}", file=sys.stderr)
        return 3
    print(f"replayed {batches} batches ({records} records) from {args.spool_dir} to {where}, "
          f"each confirmed there; {left} left")
    if left:
        print(f"flowcept keeper replay: {left} batches are still in {args.spool_dir} (the "
              f"destination did not confirm them): run the same command again", file=sys.stderr)
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
    r.add_argument("--workers", type=int, default=1, metavar="N",
                   help="keeper processes on this host (one keeper uses one core): each a group "
                        "member writing <store-dir>/worker-NN; Kafka needs kafka_partitions >= "
                        "all keepers of the group")
    r.add_argument("--peer-store", action="append", metavar="DIR",
                   help="another keeper's store directory (or a directory of them), read only: "
                        "batches already committed there are not stored again (give the old "
                        "directory when a replacement keeper gets a new one)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress line (default: on a terminal, one line with records, "
                        "batches, rate and lag, renewed every 5 seconds)")
    r.add_argument("--progress-interval", type=float, default=5.0, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    r.add_argument("--count", type=int, default=16, help="entries per read")
    r.add_argument("--max-frame-bytes", type=int, default=None,
                   help="larger frames are quarantined (default: config keeper_max_frame_bytes)")
    r.add_argument("--claim-idle-ms", type=int, default=None,
                   help="take over another keeper's pending batches after this idle time")
    r.add_argument("--status-interval", type=float, default=1.0)
    r.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without input (batch use); SIGUSR1 also makes it "
                        "read what is left and exit (send it when the producers are done)")
    r.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="at start, try an unreachable hub again for this long (a job script "
                        "starting the hub beside the keeper); default: fail at once")
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
                                  "the transport was down at the end of a job) to the hub --url "
                                  "names (its scheme picks the transport), and removes a file "
                                  "only after the hub confirmed its batch.  Safe to repeat.  "
                                  "Example: flowcept keeper replay --spool-dir D --url "
                                  "redis://host:6379/0")
    y.add_argument("--spool-dir", required=True)
    y.add_argument("--url", default=None, help="the hub, e.g. redis://host:6379/0 or "
                   "kafka://host:9092/flowcept (default: config transport_url)")
    y.add_argument("--transport", default=None,
                   help="default: the one the URL's scheme names; 'embedded' with --store-dir")
    y.add_argument("--store-dir", default=None, help="with --transport embedded: the local store")
    y.add_argument("-o", "--option", action="append", metavar="KEY=VALUE")
    y.set_defaults(func=_cmd_replay)
