"""Flowcept's ``lmdb_dao`` import path (flowcept.compat.daos)."""
from flowcept.compat.daos import LMDBDAO  # noqa: F401
