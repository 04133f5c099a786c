"""Flowcept's ``docdb_dao_base`` import path (flowcept.compat.daos)."""
from flowcept.compat.daos import DocumentDBDAO  # noqa: F401
