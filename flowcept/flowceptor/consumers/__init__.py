"""Flowcept's ``flowcept.flowceptor.consumers`` import paths (flowcept.compat.consumers)."""
from flowcept.compat.consumers import BaseConsumer, DocumentInserter  # noqa: F401
