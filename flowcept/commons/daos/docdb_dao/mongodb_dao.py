"""Flowcept's ``mongodb_dao`` import path (flowcept.compat.daos)."""
from flowcept.compat.daos import MongoDBDAO  # noqa: F401
