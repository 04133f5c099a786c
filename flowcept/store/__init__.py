"""Stores: where batches rest.  Same registry pattern as transports.

Lifecycle rules:
  1. ``__init__(path, config)`` opens or creates the store at path (dirs
     0700, files 0600).
  2. ``put_batches([(key, frame), ...])`` stores the validated frames in one
     durable transaction and returns how many were new: a key already
     present is skipped, so redelivery stores nothing twice.
  3. ``scan()`` yields ``(key, frame)`` in key order; ``summaries()`` yields
     ``(key, summary)`` so that queries can skip batches without reading them.
  4. ``close()`` is idempotent.
"""
from __future__ import annotations

from typing import List

from flowcept._registry import backend_names, load_backend


class Store:
    name = "base"

    def put_batches(self, items) -> int:
        raise NotImplementedError

    def scan(self, keys=None):
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
    return backend_names(__name__)


def open_store(name: str, path: str, config=None, readonly: bool = False) -> Store:
    return load_backend(__name__, name, "store")(path, config, readonly=readonly)
