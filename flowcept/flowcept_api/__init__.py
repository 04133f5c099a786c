"""Flowcept's ``flowcept.flowcept_api`` import paths (``flowcept_controller``:
Flowcept, ``db_api``: DBAPI), and ``db``: the reading under ``Flowcept.db``."""
