"""Flowcept's ``base_consumer`` import path (flowcept.compat.consumers)."""
from flowcept.compat.consumers import BaseConsumer  # noqa: F401
