"""Flowcept's WorkflowObject: what Flowcept.db.get_workflow_object returns."""
from flowcept.commons.flowcept_dataclasses._doc import DocObject


class WorkflowObject(DocObject):
    _type = "workflow"
    _fields = ("workflow_id", "parent_workflow_id", "campaign_id", "name", "subtype",
               "description", "used", "generated", "user", "hostname", "job",
               "utc_timestamp", "started_at", "ended_at", "custom_metadata", "flowcept_version")

    @staticmethod
    def workflow_id_field() -> str:
        return "workflow_id"
