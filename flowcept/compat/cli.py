"""``flowcept compat``: Flowcept 1.0.3's CLI verbs over our stores.

    flowcept compat --version
    flowcept compat --show-settings
    flowcept compat --init-settings [--settings-file PATH]
    flowcept compat --query '{"activity_id": "train"}' [--run-dir DIR]
    flowcept compat --get-task TASK_ID
    flowcept compat --workflow-count WORKFLOW_ID
    flowcept compat --start-consumption-services   # store what the MQ holds, until Ctrl-C

Documents are printed as Flowcept writes them, one JSON document per line.
"""
from __future__ import annotations

import json
import os
import sys

TEMPLATE = """\
# Flowcept settings read by this package (flowcept.compat.settings): the
# keys below map onto its configuration; docs/compatibility.md lists the rest.
project:
  dump_buffer:
    enabled: false
    path: flowcept_buffer.jsonl
log:
  log_stream_level: warning
telemetry_capture:
  cpu: false
  mem: false
instrumentation:
  enabled: true
mq:
  enabled: false        # true + type/host/port: a network transport
databases:
  lmdb:
    enabled: true
"""


def register(sub) -> None:
    p = sub.add_parser("compat", help="Flowcept 1.0.3's CLI verbs (--query, --get-task, ...)",
                       description=__doc__.split("\n\n")[0] + "  Reads the stores under "
                       "--run-dir (default: the configured run_dir).")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--version", action="store_true", help="print the package version")
    g.add_argument("--show-settings", action="store_true",
                   help="print the effective settings and where each came from")
    g.add_argument("--init-settings", action="store_true",
                   help="write a Flowcept-style settings.yaml (never overwrites)")
    g.add_argument("--query", metavar="FILTER", help="tasks matching a Mongo-style JSON filter")
    g.add_argument("--get-task", metavar="TASK_ID", help="one task by its id")
    g.add_argument("--workflow-count", metavar="WORKFLOW_ID",
                   help="how many tasks and workflow documents a workflow has")
    g.add_argument("--start-consumption-services", action="store_true",
                   help="run the keeper of the settings' MQ into the settings' database in the "
                        "foreground, until SIGTERM or Ctrl-C (what `flowcept keeper run` does)")
    p.add_argument("--run-dir", default=None, help="where the stores are (default: config run_dir)")
    p.add_argument("--settings-file", default=os.path.join("~", ".flowcept", "settings.yaml"),
                   help="--init-settings: where to write (default: ~/.flowcept/settings.yaml)")
    p.add_argument("--limit", type=int, default=0, help="--query: at most this many tasks")
    p.set_defaults(func=run)


def run(args) -> int:
    out = sys.stdout
    if args.version:
        from flowcept import __version__
        print(__version__, file=out)
        return 0
    if args.show_settings:
        from flowcept import configs
        from flowcept.config import describe, load_config
        print(f"settings file: {configs.SETTINGS_PATH or '(none)'}", file=out)
        for key, value, origin, _doc in describe(load_config()):
            print(f"{key} = {value!r}  # {origin}", file=out)
        return 0
    if args.init_settings:
        path = os.path.expanduser(args.settings_file)
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists; remove it or pass --settings-file PATH")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "x") as f:
            f.write(TEMPLATE)
        print(f"wrote {path}; use it with FLOWCEPT_SETTINGS_PATH={path}", file=out)
        return 0
    if args.start_consumption_services:
        from flowcept.compat.persistence import status_dir, store_specs
        from flowcept.config import process_config
        from flowcept.keeper.service import Keeper
        config = process_config()
        if config.transport == "embedded":
            raise ValueError("no MQ in the settings (mq.enabled is false): records are stored as "
                             "they are drained; set mq.enabled: true to consume an MQ")
        return Keeper(config, store_dir=status_dir(config), stores=store_specs(config)).run()
    from flowcept.compat.dbapi import DBAPI
    db = DBAPI([args.run_dir] if args.run_dir else ())
    if args.query is not None:
        try:
            flt = json.loads(args.query)
        except json.JSONDecodeError as e:
            raise ValueError(f"--query takes a JSON filter, e.g. '{{\"activity_id\": \"f\"}}': {e}") \
                from None
        for doc in db.task_query(flt, limit=args.limit):
            print(json.dumps(doc, default=str), file=out)
        return 0
    if args.get_task is not None:
        docs = db.task_query({"task_id": args.get_task})
        if not docs:
            print(f"flowcept compat: no task {args.get_task}", file=sys.stderr)
            return 1
        print(json.dumps(docs[0], default=str), file=out)
        return 0
    wf = args.workflow_count
    counts = {"workflow_id": wf, "tasks": len(db.task_query({"workflow_id": wf})),
              "workflows": len(db.workflow_query({"workflow_id": wf})), "objects": 0}
    print(json.dumps(counts), file=out)
    return 0
