"""Flowcept's ``flowcept.commons`` import paths (vocabulary, logger,
dataclasses), so that Flowcept code imports unchanged."""
