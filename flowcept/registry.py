"""Backends by name, through Python entry points (the ecosystem's plugin
convention).  Built-ins are registered the same way in pyproject.toml, so a
third-party package adds a backend with one file and one entry-point line:

    [project.entry-points."flowcept.transports"]
    mybus = "mypkg.mybus:MyTransport"

Kinds and their groups are in ``GROUPS``.  Names are listed without importing
the backends (``import flowcept`` stays cheap; a backend whose client
library is absent still lists).  A backend once loaded stays resolvable in
this process even if package metadata can no longer be read (e.g. after the
epilog dropped privileges on an installation readable only by root): load
what you need before such a drop, or ``register`` it.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Tuple

GROUPS = {
    "transport": "flowcept.transports",   # leader side: publish batches
    "source": "flowcept.sources",         # keeper side: read them back
    "store": "flowcept.stores",           # where batches rest
    "adapter": "flowcept.adapters",       # capture from an external system
    "leader": "flowcept.leaders",         # who drains a capturing process's ring
    # settings files by suffix (yaml: Flowcept's settings.yaml), and ``flowcept``:
    # Flowcept's settings in effect, as a dict (what the adapters read of them)
    "settings_reader": "flowcept.settings_readers",
}

_loaded: Dict[Tuple[str, str], object] = {}
_points: Dict[str, Dict[str, str]] = {}


def _entry_points(kind: str) -> Dict[str, str]:
    """name -> "module:attr" of the group's entry points (cached)."""
    if kind not in GROUPS:
        raise ValueError(f"unknown backend kind {kind!r}: choose one of {', '.join(GROUPS)}")
    cached = _points.get(kind)
    if cached is not None:
        return cached
    found: Dict[str, str] = {}
    try:
        from importlib.metadata import entry_points
        eps = entry_points()
        group = (eps.select(group=GROUPS[kind]) if hasattr(eps, "select")
                 else eps.get(GROUPS[kind], ()))   # Python 3.9
        for ep in group:
            found.setdefault(ep.name, ep.value)
    except Exception:   # unreadable metadata: fall back to what is loaded
        found = {}
    if found:
        _points[kind] = found
    return found


def names(kind: str) -> List[str]:
    """Every backend name of a kind: installed entry points and loaded ones."""
    return sorted(set(_entry_points(kind)) | {n for k, n in _loaded if k == kind})


def register(kind: str, name: str, obj) -> None:
    """Makes ``obj`` the backend ``name`` of ``kind`` in this process (plugins
    without packaging, tests)."""
    _entry_points(kind)   # validates kind
    _loaded[(kind, name)] = obj


def load(kind: str, name: str):
    """The backend object (usually a class) registered as ``name``."""
    obj = _loaded.get((kind, name))
    if obj is not None:
        return obj
    target = _entry_points(kind).get(name)
    if target is None:
        known = names(kind)
        where = (f"choose one of {', '.join(known)}" if known else
                 f"no {kind} backend is registered: flowcept's package metadata is missing or "
                 f"unreadable (reinstall with `pip install flowcept`, or load the backends "
                 f"before dropping privileges)")
        raise LookupError(f"unknown {kind} {name!r}: {where}")
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    _loaded[(kind, name)] = obj
    return obj


def preload(config) -> None:
    """Loads the backends a configuration names (before a privilege drop)."""
    for kind, name in (("transport", config.transport), ("store", config.store),
                       ("leader", config.leader), ("leader", "thread")):
        try:
            load(kind, name)
        except LookupError:
            pass
