"""``flowcept bridge --from URL --to URL``: forward a site hub to a central hub."""
from __future__ import annotations

import json
import logging
import socket
import sys


def _cmd_bridge(args) -> int:
    from flowcept.errors import TransportUnavailable
    from flowcept.keeper.bridge import Bridge
    from flowcept.keeper.cli import _config
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = _config(args)
    name = args.name or f"bridge-{socket.gethostname().split('.')[0]}"
    bridge = Bridge(cfg, args.from_url, args.to_url, name=name, count=args.count)
    try:
        rc = bridge.run(max_idle_s=args.exit_when_idle)
    except TransportUnavailable as e:
        print(f"flowcept bridge: error: {e}", file=sys.stderr)
        return 3
    print(json.dumps({"bridge": bridge.name, "from": bridge.from_name, "to": bridge.to_name,
                      **bridge.counts}), flush=True)
    return rc


def register(sub) -> None:
    p = sub.add_parser(
        "bridge", help="forward batches from one hub to another (federated hubs)",
        description="Reads batches from a site hub's keeper side as a consumer-group member and "
                    "publishes them unchanged, under their batch ids, to another hub; an entry is "
                    "acknowledged at the source only after the destination confirmed it "
                    "(at-least-once; the keepers behind the destination store each batch once). "
                    "The transports are picked by URL scheme.  Example: flowcept bridge --from "
                    "redis://site-hub:6379/0 --to kafka://central:9092/flowcept")
    p.add_argument("--from", dest="from_url", required=True, metavar="URL",
                   help="source hub, e.g. redis://[:pw@]host:6379/0 or kafka://host:9092/topic")
    p.add_argument("--to", dest="to_url", required=True, metavar="URL",
                   help="destination hub, e.g. kafka://host:9092[,host:9092]/topic")
    p.add_argument("--name", default=None, help="consumer name at the source (default: "
                   "bridge-<host>); restart a bridge under the same name to resume its pending "
                   "batches at once")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a configuration key for either side, e.g. -o redis_group=bridges "
                        "-o kafka_partitions=16 (see `flowcept config`)")
    p.add_argument("--count", type=int, default=64, help="entries per read")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without input (batch use, tests)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_cmd_bridge)
