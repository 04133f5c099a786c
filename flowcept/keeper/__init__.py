"""The keeper service: transport -> validation -> sharded LMDB, ack after commit.

``flowcept keeper run|status|replay`` on the command line, or from Python::

    from flowcept.config import load_config
    from flowcept.keeper import Keeper
    k = Keeper(load_config(transport="redis", transport_url="redis://host:6379/0",
                           store_dir="/path/store", lmdb_shards=4), name="k1")
    k.run()          # until k.stop(), SIGTERM or SIGINT
"""
from flowcept.keeper.service import COUNTERS, Keeper, format_status, read_status

__all__ = ["COUNTERS", "Keeper", "read_status", "format_status"]
