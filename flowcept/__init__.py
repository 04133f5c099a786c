"""flowcept: HPC-native, MPI-aware workflow provenance.

``import flowcept`` is cheap on thousands of ranks: nothing is configured,
loaded or opened until the first capture.  The public names are loaded on
first access.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "flowcept_task": "flowcept.capture.task",
    "FlowceptTask": "flowcept.capture.task",
    "FlowceptLoop": "flowcept.capture.task",
    "Flowcept": "flowcept.capture.workflow",
    "load_config": "flowcept.config",
    "Config": "flowcept.config",
    "ConfigError": "flowcept.config",
    "read_tasks": "flowcept.query.tasks",
    "read_records": "flowcept.query.tasks",
    "read_workflows": "flowcept.query.tasks",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowcept' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
