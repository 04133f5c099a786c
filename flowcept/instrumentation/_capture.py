"""What the Flowcept-style capture classes share: pushing one record with
Flowcept's fields in its payload, telemetry, id conversions."""
from __future__ import annotations

import os
from typing import Any, Optional

from flowcept.capture import session as runtime
from flowcept.commons.vocabulary import Status
from flowcept.record.layout import STATUS_ERROR, STATUS_FINISHED, STATUS_RUNNING, parse_task_id

NATIVE_STATUS = {"FINISHED": STATUS_FINISHED, "ERROR": STATUS_ERROR, "RUNNING": STATUS_RUNNING}


def session():
    return runtime._session or runtime.ensure_session()


def status_code(status: Any):
    """(record status, Flowcept status text for the payload or None)."""
    if status is None:
        return STATUS_FINISHED, None
    if isinstance(status, int) and not isinstance(status, bool):
        return status, None   # our record status codes
    text = status.value if isinstance(status, Status) else str(status)
    code = NATIVE_STATUS.get(text)
    return (code, None) if code is not None else (STATUS_FINISHED, text)


def parent_int(parent_task_id: Any) -> Optional[int]:
    """Our parent id of a Flowcept parent_task_id: an int, or our string
    form; None for another string (then it is kept in the payload)."""
    if parent_task_id is None:
        return 0
    if isinstance(parent_task_id, int):
        return parent_task_id
    text = str(parent_task_id)
    if len(text) == 33 and text[16] == "-":
        try:
            return parse_task_id(text)[1]
        except ValueError:
            pass
    return None


def workflow_of(s, workflow_id: Any) -> Optional[int]:
    from flowcept.capture.workflow import workflow_int_id
    if workflow_id is None:
        return None
    wf = workflow_int_id(workflow_id)
    return None if wf == s.workflow_id else wf


def telemetry() -> Optional[dict]:
    """CPU, memory and process figures (psutil; None without it)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        vm = psutil.virtual_memory()
        proc = psutil.Process(os.getpid())
        mi = proc.memory_info()
        return {"cpu": {"percent_all": psutil.cpu_percent(interval=None),
                        "times_avg": psutil.cpu_times()._asdict()},
                "memory": {"virtual": {"total": vm.total, "available": vm.available,
                                       "percent": vm.percent, "used": vm.used}},
                "process": {"pid": proc.pid, "memory": {"rss": mi.rss, "vms": mi.vms},
                            "cpu_times": proc.cpu_times()._asdict(),
                            "num_threads": proc.num_threads()}}
    except Exception:   # telemetry never breaks a task
        return None


def telemetry_on() -> bool:
    from flowcept import configs
    try:
        return bool(configs.compat_values().get("telemetry_enabled"))
    except Exception:
        return False


def sanitize(value: Any) -> Any:
    """Flowcept's replace_non_json_serializable: objects JSON cannot hold
    become 'object_instance_id_<id>' strings (bytes stay bytes)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    mod = type(value).__module__ or ""
    if mod == "numpy" or mod.startswith("numpy."):
        return value   # the payload encoder describes arrays itself
    return f"object_instance_id_{id(value)}"
