"""Lineage: which tasks a task depends on, and which depend on it.

Two kinds of edges:

* **parent links** -- a task recorded inside another (nested decorated
  calls, FlowceptTask blocks, loops) has that task as parent
  (parent_task_id);
* **data dependencies** -- task B depends on task A when a value B *used*
  equals a value A *generated* and A ended no later than B started
  (A.end_ns <= B.start_ns).  Only hashable scalars take part: strings,
  bytes, integers and floats (not booleans, not None, not NaN), found as
  the top-level values of the used/generated dicts or as elements of a
  top-level list or tuple.  Equality is Python's (so 1 == 1.0); containers,
  numpy array summaries and other objects never link.  Every earlier
  producer of the value counts, across ranks and workflows of the archive.

``Archive.ancestors`` walks the edges backwards (parents, producers),
transitively, and ``descendants`` forwards (children, consumers), on the read
path's index (``flowcept.query.lineage.LineageIndex``).  This module keeps what
the index does not give: parent rows without reading any payload (the report)
and the data edges with the values that make them (PROV), found by decoding
every payload once.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List

import numpy as np

from flowcept.query.lineage import find_rows, scalar_values   # one rule of which values link (also for its users)


class Lineage:
    def __init__(self, archive):
        self.a = archive
        wf = archive._column("workflow_id")
        tid = archive._column("task_id")
        pid = archive._column("parent_id")
        has = pid != 0
        self.parent = np.full(archive.n, -1, np.int64)
        self.parent[has] = find_rows(wf, tid, wf[has], pid[has])
        # children as CSR
        kids = np.flatnonzero(self.parent >= 0)
        order = kids[np.argsort(self.parent[kids], kind="stable")]
        self.child_rows = order
        self.child_ptr = np.searchsorted(self.parent[order], np.arange(archive.n + 1))
        self._data = None

    def _data_index(self):
        if self._data is None:
            a = self.a
            docs = a.decoded_payloads()
            producers: Dict = defaultdict(list)
            consumers: Dict = defaultdict(list)
            used: List[List] = []
            gen: List[List] = []
            for i, d in enumerate(docs):
                u = scalar_values(d.get("used")) if isinstance(d, dict) else []
                g = scalar_values(d.get("generated")) if isinstance(d, dict) else []
                used.append(u)
                gen.append(g)
                for v in set(g):
                    producers[v].append(i)
                for v in set(u):
                    consumers[v].append(i)
            self._data = (used, gen, {k: np.array(v, np.int64) for k, v in producers.items()},
                          {k: np.array(v, np.int64) for k, v in consumers.items()})
        return self._data

    def data_edges(self, rows=None):
        """(consumer, producer, value) for every data dependency among rows."""
        a = self.a
        used, gen, producers, _c = self._data_index()
        start_ns, end_ns = a._column("start_ns"), a._column("end_ns")
        allowed = None if rows is None else set(int(r) for r in rows)
        rows = range(a.n) if rows is None else rows
        for b in rows:
            b = int(b)
            for v in set(used[b]):
                p = producers.get(v)
                if p is None:
                    continue
                for x in p[end_ns[p] <= start_ns[b]].tolist():
                    if x != b and (allowed is None or x in allowed):
                        yield b, x, v
