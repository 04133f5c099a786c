"""Leader status files: what each node leader has drained, for ``flowcept metrics``.

A leader runs in a process of its own (the helper process, ``flowcept drain``)
or in the capturing process, never in the exporter's, so its counters reach
the exporter as a small JSON file that the :class:`~flowcept.node.drain.Drainer`
rewrites at most every ``STATUS_EVERY_S`` seconds while it drains, and once
more when it stops::

    <shm_dir>/flowcept-<uid>/.leaders/<job>.<node>.<pid>.json
    {"job": ..., "node": ..., "pid": ..., "records": ..., "batches": ...,
     "running": true, "updated": <epoch s>}

The directory is beside the per-job ring directories (its leading dot keeps
it from being taken for a job); the file outlives the leader so that the
last counts are scraped.  A leader removes files older than ``KEEP_S`` when it
writes its first one.
"""
from __future__ import annotations

import glob
import json
import os
import time
from typing import List

from flowcept.osutil import atomic_write, private_dir

STATUS_EVERY_S = 2.0
KEEP_S = 24 * 3600
DIRNAME = ".leaders"


def status_dir(config) -> str:
    return os.path.join(config.shm_dir, f"flowcept-{os.geteuid()}", DIRNAME)


def status_path(config, job_name: str, node: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{job_name}.{node}")
    return os.path.join(status_dir(config), f"{safe}.{os.getpid()}.json")


def write_status(path: str, doc: dict, prune: bool = False) -> None:
    """Writes one leader's status (owner-only, atomically).  ``prune``: first
    removes status files not updated for KEEP_S."""
    directory = os.path.dirname(path)
    private_dir(directory)
    if prune:
        old = time.time() - KEEP_S
        for p in glob.glob(os.path.join(directory, "*.json")):
            try:
                if os.lstat(p).st_mtime < old:
                    os.unlink(p)
            except OSError:
                pass
    atomic_write(path, json.dumps(doc, sort_keys=True))


def read_statuses(shm_dir: str) -> List[dict]:
    """Every leader status under ``shm_dir`` (all users' directories this
    process may read); unreadable or torn files are skipped."""
    out = []
    for p in sorted(glob.glob(os.path.join(shm_dir, "flowcept-*", DIRNAME, "*.json"))):
        try:
            with open(p) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            doc.setdefault("path", p)
            out.append(doc)
    return out
