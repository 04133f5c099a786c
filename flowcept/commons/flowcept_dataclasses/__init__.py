"""Flowcept's ``flowcept.commons.flowcept_dataclasses`` import paths (flowcept.compat.objects)."""
