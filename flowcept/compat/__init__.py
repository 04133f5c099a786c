"""Flowcept 1.0.3's API as a translation onto the engine.

Everything a Flowcept 1.0.3 program reaches (its import paths, classes,
settings file, environment variables and ``Flowcept.db``) is mapped here
onto the engine's classes: the capture API (``flowcept.capture``), the
keeper, the stores and the one read path.  Nothing here captures, stores or
decodes records itself.  The engine never imports this package (an
import-linter ``forbidden`` contract in pyproject.toml); Flowcept's import
paths (``flowcept.instrumentation``, ``flowcept.flowcept_api``,
``flowcept.commons``, ``flowcept.flowceptor``, ``flowcept.configs``) are thin
modules that re-export from it.

Modules: ``settings`` (the settings file and environment, translated),
``configs`` (Flowcept's constants), ``controller`` (``Flowcept``),
``persistence`` (the in-process keeper of ``start_persistence``),
``buffer`` (the message buffer and its JSONL file), ``dbapi``
(``Flowcept.db``), ``daos`` (``DocumentDBDAO``, ``MQDao``), ``objects``
(``TaskObject``, ``WorkflowObject``, ``AgentObject``, ``BlobObject``),
``consumers`` (``BaseConsumer``, ``DocumentInserter``), ``utils``.
"""
