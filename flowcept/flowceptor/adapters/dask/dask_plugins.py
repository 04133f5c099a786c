"""Flowcept's Dask plugins (implemented in flowcept.adapters.dask)."""
from flowcept.adapters.dask import (FlowceptDaskSchedulerAdapter,  # noqa: F401
                                    FlowceptDaskWorkerAdapter, register_dask_workflow)
