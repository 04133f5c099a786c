"""Flowcept's ``mq_dao_base`` import path (flowcept.compat.daos)."""
from flowcept.compat.daos import MQDao  # noqa: F401
