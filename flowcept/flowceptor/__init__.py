"""Flowcept's ``flowcept.flowceptor`` import paths (aliases over flowcept.adapters)."""
