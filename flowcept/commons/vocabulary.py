"""Flowcept's ``flowcept.commons.vocabulary`` import path (flowcept.compat.vocabulary)."""
from flowcept.compat.vocabulary import Status  # noqa: F401

__all__ = ["Status"]
