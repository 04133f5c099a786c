"""``flowcept observe ADAPTER ...``: run an adapter as a service.

Each adapter emits into a capture session of this process (its ring, its
leader, the configured transport and store), until SIGTERM/SIGINT, then
emits what is left, saves its checkpoint and drains.  Run it again with the
same source (or the same ``--checkpoint``) and it resumes where it stopped.
"""
from __future__ import annotations

import sys

_EPILOG = ("Records go where every capture goes (config run_dir/transport; -o KEY=VALUE for "
           "any configuration key).  The checkpoint defaults to <run_dir>/adapters/<adapter>-<hash>.json.")


def _common(p) -> None:
    p.add_argument("--poll-interval", type=float, default=None, metavar="SECONDS",
                   help="seconds between passes (default: the adapter's)")
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint file")
    p.add_argument("--once", action="store_true", help="one pass, then stop (cron, tests)")
    p.add_argument("--exit-after", type=float, default=None, metavar="SECONDS",
                   help="stop after SECONDS")
    p.add_argument("--workflow-name", default=None, help="name of the workflow the records join")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a configuration key, e.g. -o run_dir=/scratch/prov -o transport=redis")


def register(sub) -> None:
    p = sub.add_parser("observe", help="watch an external system (MLflow, files, SQLite, RabbitMQ) "
                       "and record what it does", description=__doc__.split("\n\n")[1].replace("\n", " "),
                       epilog=_EPILOG)
    ad = p.add_subparsers(dest="adapter", metavar="ADAPTER")
    ad.required = True

    m = ad.add_parser("mlflow", help="MLflow runs -> tasks (params used, metrics generated)",
                      description="Each ended MLflow run becomes one task: params -> used, "
                                  "metrics (with history) -> generated, tags kept, artifacts "
                                  "listed.  Read-only: the REST API, or the sqlite backend file.",
                      epilog=_EPILOG)
    m.add_argument("--tracking-uri", required=True,
                   help="http(s)://host:port of a tracking server, or sqlite:///path/mlflow.db")
    m.add_argument("--experiment-id", action="append", default=None, help="only these experiments")
    _common(m)
    m.set_defaults(func=_run, build=lambda a: {"tracking_uri": a.tracking_uri,
                                               "experiment_ids": a.experiment_id})

    f = ad.add_parser("files", help="created/modified/moved/deleted files -> data entities",
                      description="Watches directories (inotify via watchdog, or --polling for "
                                  "Lustre/GPFS/NFS, where inotify does not see other nodes' writes).",
                      epilog=_EPILOG)
    f.add_argument("path", nargs="+", help="directories to watch (recursively)")
    f.add_argument("--polling", action="store_true", help="rescan instead of inotify")
    f.add_argument("--hash", default=None, metavar="ALGO", help="content hash, e.g. sha256")
    f.add_argument("--include-existing", action="store_true",
                   help="on a first start, record the files already there")
    _common(f)
    f.set_defaults(func=_run, build=lambda a: {"paths": a.path, "hash": a.hash,
                                               "mode": "polling" if a.polling else "inotify",
                                               "include_existing": a.include_existing})

    s = ad.add_parser("sqlite", help="new or changed rows of a table another process writes",
                      description="Read-only connection; PRAGMA data_version tells whether anything "
                                  "was committed; a rowid (or --updated-column) watermark.",
                      epilog=_EPILOG)
    s.add_argument("db", help="the database file")
    s.add_argument("--table", required=True, help="the table to watch")
    s.add_argument("--updated-column", default=None,
                   help="a column that grows when a row changes: changed rows are recorded again")
    _common(s)
    s.set_defaults(func=_run, build=lambda a: {"path": a.db, "table": a.table,
                                               "updated_column": a.updated_column})

    r = ad.add_parser("rabbitmq", help="one record per message routed through an exchange",
                      description="Declares a durable queue of its own bound to the exchange: the "
                                  "application's queues and consumers are untouched; messages "
                                  "published while it is down wait in its queue.",
                      epilog=_EPILOG)
    r.add_argument("url", help="amqp://user:password@host:port/vhost")
    r.add_argument("--exchange", required=True, help="the exchange to observe")
    r.add_argument("--binding-key", default="#", help="binding key (default # : everything)")
    r.add_argument("--queue", default=None, help="the adapter's queue name")
    _common(r)
    r.set_defaults(func=_run, build=lambda a: {"url": a.url, "exchange": a.exchange,
                                               "binding_key": a.binding_key, "queue": a.queue})


def _overrides(items):
    from flowcept.errors import ConfigError
    out = {}
    for it in items:
        key, eq, value = it.partition("=")
        if not eq or not key:
            raise ConfigError(f"-o {it!r}: write KEY=VALUE, e.g. -o run_dir=/scratch/prov")
        out[key.strip()] = value
    return out


def _run(args) -> int:
    import signal
    import threading
    from flowcept.adapters import adapter_from_config
    from flowcept.capture import session as runtime
    from flowcept.config import load_config
    opts = {k: v for k, v in args.build(args).items() if v is not None}
    if args.poll_interval is not None:
        opts["poll_interval"] = args.poll_interval
    if args.checkpoint:
        opts["checkpoint"] = args.checkpoint
    config = load_config(**_overrides(args.option))
    session = runtime.start_local_session(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    adapter = None
    try:
        adapter = adapter_from_config(args.adapter, session, **opts)
        adapter.start()
        session.push_workflow({"name": args.workflow_name or f"observe-{args.adapter}",
                               "adapter": args.adapter, "source": adapter.source_key()})
        print(f"flowcept observe {args.adapter}: {adapter.source_key()}; checkpoint "
              f"{adapter.checkpoint_path}; SIGTERM or Ctrl-C stops it", file=sys.stderr, flush=True)
        if adapter.settled or adapter.reemitted:
            print(f"flowcept observe {args.adapter}: after a crash, {adapter.settled} record(s) found "
                  f"stored, {adapter.reemitted} emitted again", file=sys.stderr, flush=True)
        if args.exit_after is not None:
            threading.Timer(args.exit_after, stop.set).start()
        if args.once:
            adapter.poll()
        else:
            adapter.run(stop)
    finally:
        if adapter is not None:
            adapter.stop()
        runtime.end_session()
    print(f"flowcept observe {args.adapter}: {adapter.emitted} record(s), {adapter.errors} "
          f"error(s); stored under {session.job.run_dir}")
    return 0 if adapter.errors == 0 else 1
