"""Flowcept's Dask plugins (implemented in flowcept.adapters.dask)."""
from typing import Optional

from flowcept.adapters.dask import (FlowceptDaskSchedulerAdapter,  # noqa: F401
                                    FlowceptDaskWorkerAdapter, register_dask_workflow,
                                    set_workflow_info_on_workers)
from flowcept.commons.flowcept_dataclasses.task_object import TaskObject


def get_flowcept_task() -> Optional[TaskObject]:
    """Inside a Dask task running on a worker: that task as Flowcept's
    TaskObject (``task_id`` the key, the workflow and campaign ids the
    workers were told); None elsewhere."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state
        worker = get_worker()
    except (ImportError, ValueError):
        return None
    key = getattr(thread_state, "key", None)
    if key is None:
        return None
    task = TaskObject()
    task.task_id = key if isinstance(key, str) else repr(key)
    task.workflow_id = getattr(worker, "current_workflow_id", None)
    task.campaign_id = getattr(worker, "current_campaign_id", None)
    task.address = getattr(worker, "address", None)
    return task
