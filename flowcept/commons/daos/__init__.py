"""Flowcept's ``flowcept.commons.daos`` import paths (flowcept.compat.daos)."""
