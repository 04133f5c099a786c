"""Flowcept's ``flowcept.commons.daos.docdb_dao`` import paths (flowcept.compat.daos)."""
