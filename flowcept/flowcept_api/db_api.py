"""Flowcept's ``DBAPI`` (what ``Flowcept.db`` is): flowcept.query.db."""
from flowcept.query.db import DBAPI  # noqa: F401

__all__ = ["DBAPI"]
