"""Flowcept's ``flowcept.commons.daos.mq_dao`` import paths (flowcept.compat.daos)."""
