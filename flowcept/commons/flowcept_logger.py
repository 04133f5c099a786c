"""Flowcept's ``FlowceptLogger``: here the ``flowcept`` logging.Logger
(its level is the ``log_level`` setting)."""
import logging


class FlowceptLogger:
    """``FlowceptLogger()`` returns the process's ``flowcept`` logger."""

    def __new__(cls, *args, **kwargs):
        return logging.getLogger("flowcept")
