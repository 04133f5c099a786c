"""flowcept: HPC-native, MPI-aware workflow provenance.

``import flowcept`` is cheap on thousands of ranks: nothing is configured,
loaded or opened until the first capture.  The public names are loaded on
first access.
"""
__version__ = "0.1.0"

_EXPORTS = {
    # Flowcept's names: the Flowcept-compatible forms (our capture underneath)
    "flowcept_task": "flowcept.instrumentation.flowcept_task",
    "lightweight_flowcept_task": "flowcept.instrumentation.flowcept_task",
    "telemetry_flowcept_task": "flowcept.instrumentation.flowcept_task",
    "FlowceptTask": "flowcept.instrumentation.task_capture",
    "FlowceptLoop": "flowcept.instrumentation.flowcept_loop",
    "FlowceptLightweightLoop": "flowcept.instrumentation.flowcept_loop",
    "flowcept_loop": "flowcept.instrumentation.flowcept_loop",
    "Flowcept": "flowcept.flowcept_api.flowcept_controller",
    "WorkflowObject": "flowcept.commons.flowcept_dataclasses.workflow_object",
    "DBAPI": "flowcept.flowcept_api.db",
    "flowcept_torch": "flowcept.instrumentation.flowcept_torch",
    "FlowceptEpochLoop": "flowcept.instrumentation.flowcept_torch",
    "FlowceptBatchLoop": "flowcept.instrumentation.flowcept_torch",
    "FlowceptDaskWorkerAdapter": "flowcept.adapters.dask",
    "FlowceptDaskSchedulerAdapter": "flowcept.adapters.dask",
    "agent_flowcept_task": "flowcept.adapters.mcp",
    # ours
    "load_config": "flowcept.config",
    "Config": "flowcept.config",
    "ConfigError": "flowcept.config",
    "read_tasks": "flowcept.query.tasks",
    "read_records": "flowcept.query.tasks",
    "read_workflows": "flowcept.query.tasks",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name == "SETTINGS_PATH":   # Flowcept's: the settings file in use (None without one)
        from flowcept.configs import SETTINGS_PATH
        return SETTINGS_PATH
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowcept' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
