"""Transports: how a leader's batches leave the node.

Lifecycle rules (every backend follows them):
  1. ``__init__(config, job)`` connects or raises TransportUnavailable with
     the reason; it never blocks longer than a few seconds.
  2. ``publish(key, frame)`` hands over one validated batch frame (bytes or
     memoryview, which the caller may reuse after the call: copy if you keep
     it).  It raises TransportUnavailable when the destination cannot take
     it; the caller then spools the batch and does not release the ring.
  3. ``flush()`` returns only when every published batch is durable at the
     destination (committed, acknowledged); only then does the caller
     release ring space.  A failure raises TransportUnavailable.
  4. ``close()`` flushes and frees resources; idempotent.
One backend per module in this package (the module name is the backend
name, ``BACKEND`` is the class).  ``null`` is the template.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from flowcept._registry import backend_names, load_backend


class TransportUnavailable(RuntimeError):
    """The destination cannot take batches now (down, unreachable, refused)."""


@dataclass(frozen=True)
class JobInfo:
    """Where a batch comes from: known to every transport."""
    job_name: str       # e.g. SLURM job id "12345" or "local-20261128-034700-1234"
    job_id: int         # 64-bit form used in batch ids
    node: str           # host name of the leader
    run_dir: str        # <run_dir>/<job_name>


class Transport:
    """Base class: see the lifecycle rules in the module docstring."""

    name = "base"

    def __init__(self, config, job: JobInfo):
        self.config = config
        self.job = job

    def publish(self, key: bytes, frame) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


def transport_names() -> List[str]:
    return backend_names(__name__)


def open_transport(name: str, config, job: JobInfo) -> Transport:
    return load_backend(__name__, name, "transport")(config, job)
