"""Stores: where batches rest.  One interface, complete here; one module per
backend, registered by entry point (group ``flowcept.stores``).

Lifecycle rules (every backend follows them; no caller uses anything else):
  1. ``__init__(location, config, readonly=False)`` opens or creates the
     store.  ``location`` is a directory for ``location_kind = "dir"``
     stores (dirs 0700, files 0600; ``store.json`` names the backend, so
     readers find and open it with ``open_store_at``) or a URL for
     ``location_kind = "url"`` stores.
  2. Writes are staged, then committed: ``stage(key, frame)`` adds one
     validated frame to the open transaction and returns 1 if the key is
     new, 0 if it is already stored (redelivery stores nothing twice);
     ``commit_staged()`` makes everything staged durable at once;
     ``abort_staged()`` drops it.  ``put_batches(items)`` is stage-all then
     commit (abort on any error) and returns how many were new.  A frame the
     caller may reuse after ``stage`` returns: copy what you keep.
  3. ``has(key)``; ``scan(keys=None, zero_copy=False)`` yields ``(key,
     frame)`` in key order (``zero_copy``: the frame is a buffer valid only
     until the next item); ``summaries()`` yields ``(key, summary)`` so that
     queries can skip batches without reading them; ``workflows()`` returns
     ``{workflow_id: merged document}``; ``stats()`` a dict for status.
  4. Failures to commit raise ``flowcept.errors.StoreError`` naming the
     store and the fix (the keeper retries those); a frame whose contents
     cannot be stored raises ``ValueError`` (the keeper quarantines it).
  5. ``close()`` aborts what is staged (never commits half a pass) and is
     idempotent.
"""
from __future__ import annotations

import json
import os
from typing import List

from flowcept import registry

META = "store.json"


class Store:
    name = "base"
    location_kind = "dir"

    def __init__(self, location, config=None, readonly: bool = False):
        self.location = location
        self.config = config
        self.readonly = readonly

    # -- writing -------------------------------------------------------
    def stage(self, key: bytes, frame) -> int:
        raise NotImplementedError

    def commit_staged(self) -> None:
        raise NotImplementedError

    def abort_staged(self) -> None:
        raise NotImplementedError

    def put_batches(self, items) -> int:
        try:
            new = sum(self.stage(key, frame) for key, frame in items)
        except BaseException:
            self.abort_staged()
            raise
        self.commit_staged()
        return new

    # -- reading -------------------------------------------------------
    def has(self, key: bytes) -> bool:
        raise NotImplementedError

    def scan(self, keys=None, zero_copy: bool = False):
        raise NotImplementedError

    def summaries(self):
        raise NotImplementedError

    def workflows(self) -> dict:
        raise NotImplementedError

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def store_names() -> List[str]:
    return registry.names("store")


def open_store(name: str, location, config=None, readonly: bool = False) -> Store:
    return registry.load("store", name)(location, config, readonly=readonly)


def backend_at(path: str) -> str:
    """The backend that wrote the store directory ``path`` (from store.json)."""
    with open(os.path.join(path, META)) as f:
        meta = json.load(f)
    name = meta.get("store")
    if not name:
        raise ValueError(f"{path}: {META} names no store backend; it was written by an older "
                         "flowcept: re-create it")
    return name


def store_dirs_at(path: str) -> List[str]:
    """The store directories at ``path``: itself when it holds a store, else
    its direct subdirectories that do (absolute paths; none if missing)."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, META)):
        return [path]
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    return [os.path.join(path, n) for n in names
            if os.path.isfile(os.path.join(path, n, META))]


def open_store_at(path: str, config=None, readonly: bool = True) -> Store:
    """Opens a store directory with the backend that wrote it."""
    return open_store(backend_at(path), path, config, readonly=readonly)


def write_meta(path: str, **fields) -> None:
    """Writes a new store directory's store.json (backends call this)."""
    from flowcept.osutil import atomic_write
    atomic_write(os.path.join(path, META), json.dumps(fields))
