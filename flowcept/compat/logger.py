"""Flowcept's ``FlowceptLogger``: ``FlowceptLogger()`` is the process's
``flowcept`` logging.Logger (one object, whose level is the ``log_level``
setting, Flowcept's ``log.log_stream_level``)."""
import logging

from flowcept.compat.settings import PROJECT_NAME


class FlowceptLogger:
    """``FlowceptLogger()`` returns the ``flowcept`` logger (a singleton)."""

    def __new__(cls, *args, **kwargs) -> logging.Logger:
        return logging.getLogger(PROJECT_NAME)
