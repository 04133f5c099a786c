"""Flowcept's ``flowcept.flowcept_api`` import paths."""
