"""The leaders capture asks for (registry group ``flowcept.leaders``).

A capturing process that drains rings (its own, or its node's under MPI)
gets its Drainer from here, with the configured transport opened through
the registry.  Capture names the leader it wants ("local") and never
imports this layer: a site can register another leader (e.g. one that
hands rings to a node-helper process) without touching capture.
"""
from __future__ import annotations

from flowcept import registry
from flowcept.node.drain import Drainer


def open_leader(config, job) -> Drainer:
    """A Drainer publishing through ``config.transport`` (not yet started)."""
    return Drainer(config, registry.load("transport", config.transport)(config, job))
