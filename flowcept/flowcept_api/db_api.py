"""Flowcept's ``flowcept.flowcept_api.db_api`` import path."""
from flowcept.compat.dbapi import DBAPI  # noqa: F401

__all__ = ["DBAPI"]
