"""Flowcept's ``flowcept.configs``: its constants, computed from the settings
in effect (``flowcept.compat.settings.load()``) when first read, not at
import (``from flowcept.configs import MQ_ENABLED`` reads them then).

Every name Flowcept 1.0.3 defines is here with Flowcept's value for the same
settings and environment; ``docs/compatibility.md`` says which of them drive
something here (the MQ, the databases, the buffer file, telemetry,
instrumentation) and which are only informative (its key-value store, web
server and agent).
"""
from __future__ import annotations

from typing import Any, List

from flowcept.compat import settings as _settings

PROJECT_NAME = _settings.PROJECT_NAME


def _names() -> List[str]:
    return sorted(_settings.load().constants()) + ["validate_config"]


def validate_config() -> None:
    """Flowcept's check of a contradictory configuration: an online flush
    mode needs the MQ on.  (Offline with databases on is valid here: the
    store is always on.)"""
    c = _settings.load().constants()
    if c["DB_FLUSH_MODE"] == "online" and not c["MQ_ENABLED"]:
        raise ValueError("Invalid configuration: project.db_flush_mode is 'online' but the MQ "
                         "is disabled: set mq.enabled: true (or MQ_ENABLED=true), or "
                         "project.db_flush_mode: offline")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    values = _settings.load().constants()
    if name not in values:
        raise AttributeError(f"module 'flowcept.configs' has no attribute {name!r}")
    return values[name]


def __dir__() -> List[str]:
    return _names()
