"""Flowcept's ``DBAPI`` (what ``Flowcept.db`` is): flowcept.flowcept_api.db."""
from flowcept.flowcept_api.db import DBAPI  # noqa: F401

__all__ = ["DBAPI"]
