"""Flowcept's ``blob_object`` import path (flowcept.compat.objects)."""
from flowcept.compat.objects import BlobObject  # noqa: F401
