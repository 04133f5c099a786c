"""Flowcept's document classes: ``TaskObject``, ``WorkflowObject``,
``AgentObject``, ``BlobObject`` (attribute bags with Flowcept's ``from_dict``,
``to_dict``, ``enrich`` and field names)."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from flowcept.compat.vocabulary import Status

# Keys of settings (at any depth) whose values are redacted in workflow documents.
SENSITIVE_KEYS = ("api_key", "access_key", "token", "secret", "password", "passwd",
                  "credentials")


def redact(value: Any) -> Any:
    """A copy of a settings mapping with secrets as "REDACTED"."""
    if isinstance(value, dict):
        return {str(k): ("REDACTED" if any(p in str(k).lower() for p in SENSITIVE_KEYS)
                         else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class _Document:
    """Attributes set are the document's fields; None ones are left out."""

    type = "task"

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]):
        obj = cls.__new__(cls)
        obj.__dict__.update(dict(doc))
        if isinstance(obj.__dict__.get("status"), str):
            try:
                obj.status = Status(obj.status)
            except ValueError:
                pass
        return obj

    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for k, v in vars(self).items():
            if v is None or k.startswith("_"):
                continue
            out[k] = v.value if isinstance(v, Status) else v
        out["type"] = self.type
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None   # Flowcept's classes declare every field with a None default

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    __hash__ = object.__hash__


class TaskObject(_Document):
    """A task document (Flowcept's TaskObject)."""

    type = "task"

    @staticmethod
    def task_id_field() -> str:
        return "task_id"

    @staticmethod
    def workflow_id_field() -> str:
        return "workflow_id"

    @staticmethod
    def get_time_field_names():
        return ["started_at", "ended_at", "submitted_at", "registered_at", "utc_timestamp"]

    @staticmethod
    def get_dict_field_names():
        return ["used", "generated", "custom_metadata", "telemetry_at_start", "telemetry_at_end"]

    def enrich(self, adapter_key: Optional[str] = None) -> None:
        from flowcept.compat import settings
        c = settings.load().constants()
        if adapter_key is not None:
            self.adapter_id = adapter_key
        if self.utc_timestamp is None:
            self.utc_timestamp = time.time()
        for key in ("node_name", "login_name", "public_ip", "private_ip", "hostname"):
            if getattr(self, key) is None and c.get(key.upper()) is not None:
                setattr(self, key, c[key.upper()])


class WorkflowObject(_Document):
    """A workflow document (Flowcept's WorkflowObject)."""

    type = "workflow"

    def __init__(self, workflow_id=None, name=None, used=None, generated=None):
        self.workflow_id = workflow_id
        self.name = name
        self.used = used
        self.generated = generated

    @staticmethod
    def workflow_id_field() -> str:
        return "workflow_id"

    def workflow_is_finished(self) -> bool:
        return self.status in (Status.FINISHED, Status.ERROR)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        if "flowcept_settings" in out:
            out["flowcept_settings"] = redact(out["flowcept_settings"])
        return out

    def enrich(self, adapter_key: Optional[str] = None) -> None:
        """Flowcept's enrichment: the settings in use (secrets redacted), the
        user, system and version."""
        from flowcept import __version__
        from flowcept.commons.flowcept_dataclasses import workflow_object as flowcept_path
        from flowcept.compat import settings
        c = settings.load().constants()
        self.utc_timestamp = time.time()
        active = getattr(flowcept_path, "settings", None)
        self.flowcept_settings = redact(active if active is not None else c["settings"])
        self.conf = {"settings_path": c["SETTINGS_PATH"]}
        if adapter_key is not None:
            self.adapter_id = adapter_key
        if self.user is None:
            self.user = c["LOGIN_NAME"] or c["FLOWCEPT_USER"]
        if self.environment_id is None and c["ENVIRONMENT_ID"] is not None:
            self.environment_id = c["ENVIRONMENT_ID"]
        if self.sys_name is None:
            self.sys_name = c["SYS_NAME"]
        if self.extra_metadata is None:
            self.extra_metadata = c["EXTRA_METADATA"]
        if self.flowcept_version is None:
            self.flowcept_version = __version__


class AgentObject(_Document):
    """An agent document (Flowcept's AgentObject)."""

    type = "agent"

    def __init__(self, agent_id=None, name=None, workflow_id=None, campaign_id=None):
        self.agent_id = agent_id
        self.name = name
        self.workflow_id = workflow_id
        self.campaign_id = campaign_id
        self.registered_at = time.time()

    @staticmethod
    def agent_id_field() -> str:
        return "agent_id"

    def enrich(self) -> None:
        from flowcept.compat import settings
        c = settings.load().constants()
        if self.user is None:
            self.user = c["LOGIN_NAME"] or c["FLOWCEPT_USER"]
        if self.extra_metadata is None:
            self.extra_metadata = c["EXTRA_METADATA"]


class BlobObject(_Document):
    """A blob object's metadata (Flowcept's BlobObject; blobs themselves are
    MongoDB GridFS objects in Flowcept and are not stored here)."""

    type = "object"

    def __init__(self, object_id=None, task_id=None, workflow_id=None, object_type=None,
                 custom_metadata=None, tags=None, version: int = 0, created_at=None,
                 updated_at=None, **fields):
        self.object_id = object_id
        self.task_id = task_id
        self.workflow_id = workflow_id
        self.object_type = object_type
        self.custom_metadata = custom_metadata
        self.tags = tags
        self.version = version
        self.created_at = created_at
        self.updated_at = updated_at
        self.__dict__.update(fields)

    @staticmethod
    def object_id_field() -> str:
        return "object_id"
