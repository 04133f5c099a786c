"""Flowcept-style task queries answered by MongoDB itself.

::

    from flowcept.query.mongo import query
    query("mongodb://host:27017/flowcept", filter={"activity_id": "diffuse"}, rank=[0, 1])

The same arguments and Mongo-style filter as ``flowcept.query.search.query``
(the LMDB path); here the condition is handed to ``find()`` unchanged, so the
server evaluates it with its indexes (workflow_id, activity_id, started_at,
status, task_id) and only matching documents cross the wire.  Results come
in storage order (batch key, then record order), as from LMDB, without
Mongo's ``_id``.
"""
from __future__ import annotations

from typing import List, Optional

from flowcept.query.search import build_condition

# what the LMDB reader returns; the Mongo documents add these
MONGO_ONLY = ("_id", "campaign_id", "node", "job")


def query(url: str, filter: Optional[dict] = None, workflow=None, activity=None, rank=None,
          start: Optional[float] = None, end: Optional[float] = None, task_id=None,
          limit: Optional[int] = None, config=None, sort=None,
          projection: Optional[dict] = None) -> List[dict]:
    """Task documents of the MongoDB store at ``url`` matching the condition.
    ``sort``: a pymongo sort list (default storage order)."""
    from flowcept.store import open_store
    cond = build_condition(filter, workflow, activity, rank, start, end, task_id)
    with open_store("mongodb", url, config, readonly=True) as st:
        return st.find_tasks(cond, limit=limit, sort=sort, projection=projection)


def workflows(url: str, filter: Optional[dict] = None, config=None) -> List[dict]:
    """Workflow documents (Flowcept's ``workflows`` collection)."""
    from flowcept.store import open_store
    with open_store("mongodb", url, config, readonly=True) as st:
        return list(st.workflows_c.find(filter or {}, {"_id": 0}))
