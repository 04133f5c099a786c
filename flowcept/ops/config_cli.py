"""``flowcept config``: the effective configuration and where each value came
from (defaults, the settings file, ``FLOWCEPT_*`` variables), with every
backend's declared options (Flowcept users know this as --show-settings)."""
from __future__ import annotations

import json


def _cmd_config(args) -> int:
    from flowcept import registry
    from flowcept.config import describe, load_config
    cfg = load_config(args.settings)
    rows = describe(cfg)
    if args.json:
        print(json.dumps({k: {"value": v, "from": o, "doc": d} for k, v, o, d in rows},
                         indent=1, default=str))
        return 0
    width = max(len(k) for k, *_ in rows)
    for key, value, origin, doc in rows:
        print(f"{key:<{width}}  {value!r:<24}  [{origin}]  {doc}")
    if args.backends:
        print()
        for kind in ("transport", "source", "store", "adapter", "leader"):
            print(f"{kind}s: {', '.join(registry.names(kind)) or '(none)'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("config", help="print the effective configuration and where each value "
                       "came from",
                       description="Builds the configuration as a capture would (defaults < "
                                   "settings file < FLOWCEPT_* environment) and prints every "
                                   "key with its value, its origin and what it means, including "
                                   "the options of the configured transport and store.  Set a "
                                   "key with FLOWCEPT_<KEY>=value or in a TOML/JSON file named by "
                                   "FLOWCEPT_SETTINGS_PATH.")
    p.add_argument("--settings", default=None, metavar="FILE", help="settings file to read "
                   "(default: FLOWCEPT_SETTINGS_PATH)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--backends", action="store_true", help="also list the registered backends")
    p.set_defaults(func=_cmd_config)
