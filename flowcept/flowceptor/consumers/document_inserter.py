"""Flowcept's ``document_inserter`` import path (flowcept.compat.consumers)."""
from flowcept.compat.consumers import DocumentInserter  # noqa: F401
