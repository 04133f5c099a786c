"""Flowcept's ``docdb_dao_utils`` import path (flowcept.compat.utils)."""
from flowcept.compat.utils import get_nested, to_epoch  # noqa: F401
