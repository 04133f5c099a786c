"""Flowcept's ``workflow_object`` import path (flowcept.compat.objects).
``settings`` here is the settings mapping ``WorkflowObject.enrich`` records
(Flowcept's ``flowcept.configs.settings``, read when first asked for)."""
from flowcept.compat.objects import WorkflowObject  # noqa: F401


def __getattr__(name):
    if name == "settings":
        from flowcept.compat import settings
        return settings.load().settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
