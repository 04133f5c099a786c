"""Flowcept's buffer file: one compact JSON message per line
(``{"type":"task",...}``), appended at ``Flowcept.stop()`` when
``project.dump_buffer.enabled``, named after the workflow and the writing
process when ``append_workflow_id_to_path`` / ``append_id_to_path`` say so,
the ``data`` field left out (as Flowcept does); read back, or first merged
into one file per workflow (``consolidate``), by ``read_buffer_file``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, List, Optional

log = logging.getLogger("flowcept")


def pseudo_id() -> str:
    """What a process appends to its buffer file's name: pid and thread."""
    return f"{os.getpid()}_{threading.get_ident()}"


def resolve_path(path: str, workflow_id: Optional[str], append_workflow_id: bool,
                 append_id: bool = False) -> str:
    """The buffer file's path: ``<stem>[_<workflow id>][_<pid>_<thread>]<suffix>``."""
    if not append_workflow_id and not append_id:
        return path
    p = Path(path)
    parts = [p.stem]
    if append_workflow_id and workflow_id:
        parts.append(str(workflow_id))
    if append_id:
        parts.append(pseudo_id())
    return str(p.with_name("_".join(parts) + p.suffix))


def _json_default(o: Any):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).decode("latin-1")
    return str(o)


def dumps(message: dict) -> str:
    """One message as a compact JSON line (Flowcept's orjson spacing)."""
    return json.dumps(message, separators=(",", ":"), default=_json_default, ensure_ascii=False)


def write(messages: Iterable[dict], path: str) -> Optional[str]:
    """Appends the messages (without ``data``) to the file at ``path``;
    None when there is nothing to write (Flowcept warns and writes nothing)."""
    msgs = list(messages)
    if not msgs:
        log.warning("flowcept: the buffer is empty; nothing written to %s", path)
        return None
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for m in msgs:
            f.write(dumps({k: v for k, v in m.items() if k != "data"}))
            f.write("\n")
    return path


def consolidate(path: str, workflow_id: str, cleanup_files: bool = True) -> str:
    """Merges the buffer files of a workflow (``<stem>_<workflow id>*``) into
    ``<stem>_<workflow id><suffix>``; with cleanup_files the merged ones go."""
    base = Path(path)
    pattern = f"{base.stem}_{workflow_id}*{base.suffix}"
    matches = sorted(base.parent.glob(pattern))
    if not matches:
        if base.exists():
            return str(base)
        raise FileNotFoundError(f"no Flowcept buffer files for workflow {workflow_id} at "
                                f"{base.parent} (looked for {pattern})")
    target = base.with_name(f"{base.stem}_{workflow_id}{base.suffix}")
    if matches == [target]:
        return str(target)
    with open(target, "wb") as out:
        for p in matches:
            if p == target:
                continue
            data = p.read_bytes()
            if not data:
                continue
            out.write(data)
            if not data.endswith(b"\n"):
                out.write(b"\n")
    if cleanup_files:
        for p in matches:
            if p != target:
                try:
                    p.unlink()
                except OSError:
                    pass
    return str(target)


def read_workflow(path: str, workflow_id: str) -> List[dict]:
    """The messages of every buffer file of a workflow (``<stem>_<workflow
    id>*<suffix>``), left in place."""
    base = Path(path)
    files = sorted(base.parent.glob(f"{base.stem}_{workflow_id}*{base.suffix}"))
    if not files:
        raise FileNotFoundError(f"no Flowcept buffer file for workflow {workflow_id} at "
                                f"{base.parent}: check project.dump_buffer in the settings, or "
                                "that Flowcept ran")
    out: List[dict] = []
    for p in files:
        out.extend(read(str(p)))
    return out


def read(path: str) -> List[dict]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Flowcept buffer file {path!r} was not found: check "
                                "project.dump_buffer in the settings, or that Flowcept ran")
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def delete(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
