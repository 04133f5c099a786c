"""The leaders capture asks for (registry group ``flowcept.leaders``).

A capturing process that drains rings (its own, or its node's under MPI)
gets its Drainer from here, with the configured transport opened through
the registry.  Capture names the leader configured (``leader``: ``process``, the
default, in flowcept.node.helper, or ``thread``, here) and never imports
this layer: a site can register another leader without touching capture.
"""
from __future__ import annotations

from flowcept import registry
from flowcept.node.drain import Drainer


def open_leader(config, job) -> Drainer:
    """A Drainer publishing through ``config.transport`` (not yet started),
    run by the capturing process (the ``thread`` leader)."""
    return Drainer(config, registry.load("transport", config.transport)(config, job))
