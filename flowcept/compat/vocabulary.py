"""Flowcept's task status vocabulary (``flowcept.commons.vocabulary``).

Our records carry FINISHED, ERROR and RUNNING natively; the other Flowcept
statuses set through FlowceptTask.end(status=...) are kept in the payload
and shown as given."""
from enum import Enum


class Status(str, Enum):
    SUBMITTED = "SUBMITTED"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"

    @staticmethod
    def get_finished_statuses():
        return [Status.FINISHED, Status.ERROR]

    def __str__(self) -> str:
        return self.value
