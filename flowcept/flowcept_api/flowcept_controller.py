"""Flowcept's controller: our ``Flowcept`` plus the Flowcept-only API.

``Flowcept.db`` (queries), ``Flowcept.buffer`` and the buffer file
(``get_buffer``, ``dump_buffer``, ``read_buffer_file``,
``delete_buffer_file``), ``generate_report``.  Flowcept keeps captured
messages in an in-memory buffer; here they go into the store at once, so
the buffer is read back from the store (the running session's included):
the same messages, in Flowcept's document shape.
"""
from __future__ import annotations

import os
from typing import List, Optional

from flowcept.capture.workflow import Flowcept as _Flowcept


class _ClassProperty:
    """A read-only property on the class (``Flowcept.db``, ``Flowcept.buffer``)."""

    def __init__(self, fget):
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, obj, cls=None):
        return self.fget(cls if cls is not None else type(obj))


def _dump_settings() -> dict:
    from flowcept import configs
    try:
        return configs.compat_values()
    except Exception:   # a broken settings file is reported when capture starts
        return {}


def _default_dump_path() -> str:
    from flowcept.configs import DEFAULT_DUMP_BUFFER_PATH
    return _dump_settings().get("dump_buffer_path", DEFAULT_DUMP_BUFFER_PATH)


class Flowcept(_Flowcept):
    __doc__ = _Flowcept.__doc__

    _db = None

    @_ClassProperty
    def db(cls):
        """Flowcept's DBAPI over our stores (flowcept.flowcept_api.db.DBAPI)."""
        if Flowcept._db is None:
            from flowcept.flowcept_api.db import DBAPI
            Flowcept._db = DBAPI()
        return Flowcept._db

    @_ClassProperty
    def buffer(cls) -> List[dict]:
        """The messages of the current workflow: its workflow message (unless
        save_workflow=False), then its tasks, as Flowcept documents."""
        from flowcept.flowcept_api.db import buffer_messages
        return buffer_messages(_Flowcept.current_workflow_id)

    def start(self) -> "Flowcept":
        settings = _dump_settings()
        if self.delete_buffer_file_at_start and settings.get("dump_buffer_enabled"):
            Flowcept.delete_buffer_file()
        super().start()
        if self.session is not None:
            from flowcept.flowcept_api import db
            run_dir = self.session.job.run_dir
            if run_dir not in db.known_run_dirs:
                db.known_run_dirs.append(run_dir)
        return self

    def stop(self) -> None:
        started = self.session is not None and not self.session.closed
        super().stop()
        if started and _dump_settings().get("dump_buffer_enabled"):
            self.dump_buffer()

    # -- the buffer -----------------------------------------------------------
    def get_buffer(self, return_df: bool = False):
        msgs = Flowcept.buffer
        if return_df:
            return _df(msgs)
        return msgs

    def dump_buffer(self, path: Optional[str] = None) -> str:
        """Writes the current workflow's messages as Flowcept's JSONL buffer file."""
        from flowcept.flowcept_api.db import write_jsonl
        return write_jsonl(Flowcept.buffer, path or _default_dump_path())

    @staticmethod
    def read_buffer_file(file_path: Optional[str] = None, return_df: bool = False,
                         normalize_df: bool = False, consolidate: bool = False,
                         workflow_id: Optional[str] = None, cleanup_files: bool = True):
        """Flowcept's buffer file, or, where none was written (dump_buffer is
        off by default here: the store keeps everything), the same messages
        exported from the store for workflow_id (default: the current one)."""
        from flowcept.flowcept_api.db import buffer_messages, read_jsonl
        path = file_path
        if path is None and _dump_settings().get("dump_buffer_enabled"):
            path = _default_dump_path()
        if path is not None:
            if not os.path.exists(path):
                raise FileNotFoundError(f"Flowcept buffer file {path!r} was not found; "
                                        "call Flowcept(...).dump_buffer(path) first, or read the "
                                        "store with Flowcept.read_buffer_file()")
            msgs = read_jsonl(path)
            if workflow_id is not None:
                msgs = [m for m in msgs if m.get("workflow_id") == workflow_id]
        else:
            msgs = buffer_messages(workflow_id or _Flowcept.current_workflow_id)
        if return_df:
            return _df(msgs, normalize_df)
        return msgs

    read_messages_file = read_buffer_file

    @staticmethod
    def delete_buffer_file(path: Optional[str] = None) -> None:
        path = path or _default_dump_path()
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    # -- Flowcept's services: none to run here --------------------------------
    @staticmethod
    def start_consumption_services(bundle_exec_id=None, check_safe_stops: bool = False,
                                   consumers=None) -> None:
        """Nothing to start: the leader writes into the store as it drains."""
        return None

    @staticmethod
    def generate_report(records: Optional[List[dict]] = None, output_path: str = "PROVENANCE_CARD.md",
                        workflow_id: Optional[str] = None, **kwargs) -> dict:
        """A provenance card (Markdown): tasks per activity, statuses and
        durations; returns the statistics it wrote."""
        from flowcept.flowcept_api.report import provenance_card
        if records is None:
            records = Flowcept.read_buffer_file(workflow_id=workflow_id)
        return provenance_card(records, output_path)


def _df(msgs, normalize: bool = True):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("return_df=True needs pandas: pip install flowcept[pandas]") from None
    return pd.json_normalize(msgs, sep=".") if normalize else pd.DataFrame(msgs)


__all__ = ["Flowcept"]
