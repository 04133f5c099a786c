"""flowcept: HPC-native, MPI-aware workflow provenance.

``import flowcept`` is cheap on thousands of ranks: nothing is configured,
loaded or opened until the first capture.  The public names are loaded on
first access.
"""
__version__ = "0.1.0"

_EXPORTS = {
    # the capture API, with Flowcept 1.0.3's names and signatures
    "flowcept_task": "flowcept.capture.task",
    "lightweight_flowcept_task": "flowcept.capture.task",
    "telemetry_flowcept_task": "flowcept.capture.task",
    "FlowceptTask": "flowcept.capture.task",
    "FlowceptLoop": "flowcept.capture.task",
    "FlowceptLightweightLoop": "flowcept.capture.task",
    # Flowcept's API around it (flowcept.compat)
    "Flowcept": "flowcept.compat.controller",
    "WorkflowObject": "flowcept.compat.objects",
    "TaskObject": "flowcept.compat.objects",
    "AgentObject": "flowcept.compat.objects",
    "BlobObject": "flowcept.compat.objects",
    "DBAPI": "flowcept.compat.dbapi",
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
    if name in ("SETTINGS_PATH", "configs"):   # Flowcept's: its constants, the settings in use
        import importlib
        configs = importlib.import_module("flowcept.configs")
        return configs if name == "configs" else configs.SETTINGS_PATH
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowcept' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
