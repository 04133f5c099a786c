"""Flowcept's TaskObject, as an attribute view of a task document."""
from flowcept.commons.flowcept_dataclasses._doc import DocObject


class TaskObject(DocObject):
    _type = "task"
    _fields = ("task_id", "workflow_id", "campaign_id", "activity_id", "parent_task_id",
               "used", "generated", "status", "stdout", "stderr", "started_at", "ended_at",
               "subtype", "tags", "custom_metadata", "agent_id", "hostname", "rank",
               "telemetry_at_start", "telemetry_at_end", "utc_timestamp", "data")

    @staticmethod
    def task_id_field() -> str:
        return "task_id"

    @staticmethod
    def workflow_id_field() -> str:
        return "workflow_id"
