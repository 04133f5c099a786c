"""Adapters: capture from systems a workflow already uses, with no change to
its code (MLflow, SQLite, files, RabbitMQ), and instrumentation of the
frameworks it runs on (Dask, PyTorch, MCP), all emitting through the
process's capture session.  The interface and lifecycle are in ``base``.

Adapters are found by name through the ``flowcept.adapters`` entry-point
group; ``start_interceptors`` is what ``Flowcept(interceptors=[...])`` and
``flowcept observe`` use.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Union

__all__ = ["start_interceptors", "stop_interceptors", "adapter_from_config", "flowcept_settings",
           "current_workflow_ids"]


def current_workflow_ids():
    """(workflow id, campaign id) of the running workflow as Flowcept names
    them (``Flowcept.current_workflow_id``, ``Flowcept.campaign_id``)."""
    from flowcept.capture import workflow
    run = getattr(workflow, "WorkflowRun", None) or workflow.Flowcept
    return run.current_workflow_id, run.campaign_id


def flowcept_settings() -> dict:
    """Flowcept's settings (the settings YAML in use, ``flowcept.configs.settings``)
    as a dict; {} without one.  Flowcept's way of configuring an adapter
    (``adapters.mlflow.file_path``, ``telemetry_capture``,
    ``instrumentation.torch``) is read from it.  They come from the registry
    (``settings_reader`` named ``flowcept``: the Flowcept translation
    provides them), so this layer imports nothing above it."""
    from flowcept import registry
    try:
        current = registry.load("settings_reader", "flowcept")
    except LookupError:   # the translation is not installed: Flowcept's defaults
        return {}
    return dict(current() or {})


def adapter_from_config(name: str, session, **options: Any):
    """An adapter of the registered ``name``, its options taken from the
    session's configuration (``<name>_<option>`` keys, e.g.
    ``mlflow_tracking_uri``) and overridden by ``options``."""
    from flowcept import registry
    from flowcept.errors import ConfigError
    try:
        cls = registry.load("adapter", name)
    except LookupError as e:
        raise ConfigError(str(e)) from None
    return cls.from_session(session, **options)


def start_interceptors(names: Union[Iterable[Any], Mapping[str, dict]], session, **kw: Any) -> List:
    """Starts one adapter per name, each polling in its own daemon thread,
    all emitting through ``session``.  names: adapter names, or a mapping
    name -> options; ``kw``: options per adapter name
    (``start_interceptors(["mlflow"], s, mlflow={"tracking_uri": url})``).
    Returns the started adapters (pass them to ``stop_interceptors``)."""
    items = names.items() if isinstance(names, Mapping) else ((n, {}) for n in names)
    started: List = []
    try:
        for name, opts in items:
            opts = {**kw.get(name, {}), **(opts or {})}
            started.append(adapter_from_config(name, session, **opts).start(background=True))
    except BaseException:
        stop_interceptors(started)
        raise
    return started


def stop_interceptors(adapters: Iterable) -> None:
    """Stops adapters in reverse start order; each emits what is left first."""
    for a in reversed(list(adapters)):
        try:
            a.stop()
        except Exception as e:   # one adapter's broken source must not keep the others running
            import logging
            logging.getLogger("flowcept.adapters").warning("flowcept: stopping %s adapter: %s",
                                                           getattr(a, "name", a), e)
