"""Read backends of the access layer: one small interface, three kinds of place.

* :class:`StoreSource` -- store directories (a run, job or store dir; any
  backend that wrote a ``store.json``) and URL stores (``scheme://...``,
  opened through the ``flowcept.stores`` entry point named by the scheme,
  so a MongoDB store plugs in by registering itself);
* :class:`ArchiveSource` -- one HDF5 archive (``flowcept.archive.open``).

Every source answers the same few questions with Flowcept-style task dicts
(``flowcept.query.tasks.task_dict``), so what sits above (core, service, MCP,
CLI) gives the same answers whatever the backend.  Filters are matched by the
one filter engine, ``flowcept.query.filters.matches``, after whatever index
the backend has (batch summaries, archive columns) narrowed the candidates.

``open_source(spec)`` picks the kind from what ``spec`` is (a file with the
HDF5 signature, a directory, a URL); no backend is named here.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Callable, Dict, List, Optional

from flowcept.query.filters import matches

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class QueryTimeout(Exception):
    """A query ran past its time budget (the service answers 503)."""


class Deadline:
    def __init__(self, seconds: Optional[float]):
        self.at = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise QueryTimeout(f"query took longer than {self.seconds:g} s; narrow the filter "
                               "(activity, rank, workflow_id, started_at) or raise --query-timeout")


class Source:
    """What the access layer needs of a backend.  Subclasses fill in the methods."""
    kind = "base"

    def __init__(self, name: str, location: str):
        self.name = name
        self.location = location
        self.lock = threading.RLock()   # h5py and LMDB handles are shared across request threads

    def find(self, cond: dict, deadline: Deadline) -> List[dict]:
        """Task dicts matching the (validated) filter, in no particular order."""
        raise NotImplementedError

    def task(self, task_id: str) -> dict:
        """One task; KeyError when absent."""
        docs = self.find({"task_id": task_id}, Deadline(None))
        if not docs:
            raise KeyError(f"no task {task_id} in {self.name}")
        return docs[0]

    def workflows(self) -> Dict[str, dict]:
        raise NotImplementedError

    def lineage(self, task_id: str, up: bool, deadline: Deadline) -> List[dict]:
        return dict_lineage(self.find({}, deadline), task_id, up)

    def prov(self, workflow: Optional[str] = None) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "location": self.location}

    def close(self) -> None:
        pass


# -- stores ------------------------------------------------------------------------------
class StoreSource(Source):
    kind = "store"

    def __init__(self, name: str, location: str, openers: List[Callable], cache_dir: Optional[str] = None):
        super().__init__(name, location)
        self.openers = openers
        self.cache_dir = cache_dir
        self._prov_archive = None
        self._prov_key = None

    @classmethod
    def at_dir(cls, name: str, path: str, cache_dir: Optional[str] = None) -> "StoreSource":
        from flowcept.query.tasks import find_stores
        from flowcept.store import open_store_at
        stores = find_stores(path)
        return cls(name, path, [(lambda p=p: open_store_at(p)) for p in stores], cache_dir)

    @classmethod
    def at_url(cls, name: str, url: str) -> "StoreSource":
        from flowcept import registry
        scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
        try:
            store_cls = registry.load("store", scheme)
        except LookupError as e:
            raise ValueError(f"no store backend for {scheme}:// URLs ({e}); installed: "
                             f"{', '.join(registry.names('store'))}") from None
        if getattr(store_cls, "location_kind", "dir") != "url":
            raise ValueError(f"the {scheme} store is opened by directory, not by URL")
        return cls(name, url, [lambda: store_cls(url, None, readonly=True)])

    def find(self, cond: dict, deadline: Deadline) -> List[dict]:
        import numpy as np
        from flowcept.native.batch import Batch
        from flowcept.query.search import _Cols, batch_may_match, record_mask
        from flowcept.query.tasks import task_dict
        from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX
        out: List[dict] = []
        with self.lock:
            for opener in self.openers:
                with opener() as store:
                    keys = [bytes(k) for k, s in store.summaries() if _may(batch_may_match, _summary(s), cond)]
                    for _key, frame in store.scan(keys=keys):
                        deadline.check()
                        b = Batch(frame, check=False)
                        recs = b.records
                        rows = np.flatnonzero((recs["flags"] & FLAG_WORKFLOW) == 0)
                        r = recs[rows]
                        strings = b.strings
                        table = np.array(strings + [""], dtype=object)
                        acts = table[np.minimum(r["activity_id"], len(table) - 1)]
                        mask = None
                        if cond:
                            try:
                                mask = record_mask(_Cols(r, lambda acts=acts: acts), cond, len(r))
                            except (TypeError, ValueError):
                                mask = None   # values the index cannot compare: the engine decides
                        if mask is None:
                            mask = np.ones(len(r), bool)
                        node = strings[0][len(NODE_PREFIX):] if strings and \
                            strings[0].startswith(NODE_PREFIX) else ""
                        for i in np.flatnonzero(mask).tolist():
                            doc = task_dict(r[i], acts[i], node, b.payload_of(int(rows[i])))
                            if not cond or matches(doc, cond):
                                out.append(doc)
        return out

    def workflows(self) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        with self.lock:
            for opener in self.openers:
                with opener() as store:
                    for wf, doc in store.workflows().items():
                        out.setdefault(f"{wf:016x}", {}).update(doc)
        return out

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for root, _dirs, files in sorted(os.walk(self.location)):
            for f in sorted(files):
                if f.endswith((".mdb", ".json")):
                    try:
                        st = os.stat(os.path.join(root, f))
                    except OSError:
                        continue
                    h.update(f"{root}/{f}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()[:16]

    def prov(self, workflow: Optional[str] = None) -> dict:
        """PROV-JSON of a store: the store is compacted once into a cached archive
        (redone when the store changes), whose exporter writes the document."""
        if "://" in self.location or not self.cache_dir:
            raise ValueError(f"PROV export of {self.name} needs an archive: run "
                             f"`flowcept compact {self.location}` and serve the .h5")
        from flowcept.archive.compact import compact
        with self.lock:
            key = self._fingerprint()
            if self._prov_key != key:
                os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
                out = os.path.join(self.cache_dir, f"{hashlib.sha256(self.location.encode()).hexdigest()[:12]}"
                                                   f"-{key}.h5")
                if not os.path.exists(out):
                    compact(self.location, out, append=False, overwrite=True, progress=False)
                if self._prov_archive is not None:
                    self._prov_archive.close()
                self._prov_archive = ArchiveSource(self.name, out)
                self._prov_key = key
            return self._prov_archive.prov(workflow)

    def close(self) -> None:
        if self._prov_archive is not None:
            self._prov_archive.close()
            self._prov_archive = None


def _may(test, summary, cond) -> bool:
    """The summary index's verdict, or "maybe" where it cannot compare the values
    (the filter engine then decides on the decoded tasks)."""
    try:
        return test(summary, cond)
    except (TypeError, ValueError):
        return True


def _summary(s: dict) -> dict:
    """A batch summary with its 64-bit unsigned values as ints: stores whose integers
    are signed 64-bit (MongoDB) keep larger ones, such as workflow ids, as text."""
    def num(v):
        return int(v) if isinstance(v, str) and v.isdigit() else v
    if any(isinstance(v, str) and v.isdigit() for v in s.get("wf", ())) or \
            any(isinstance(s.get(k), str) for k in ("t0", "t1", "id0", "id1", "s1", "e0")):
        s = dict(s)
        s["wf"] = [num(v) for v in s.get("wf", ())]
        for k in ("t0", "t1", "id0", "id1", "s1", "e0", "r0", "r1"):
            if k in s:
                s[k] = num(s[k])
    return s


# -- archives ----------------------------------------------------------------------------
class ArchiveSource(Source):
    kind = "archive"

    def __init__(self, name: str, path: str):
        super().__init__(name, path)
        import flowcept.archive
        self.archive = flowcept.archive.open(path)

    def _docs(self, selection) -> List[dict]:
        import numpy as np
        return [self.archive.task(int(i)) for i in np.asarray(selection).tolist()]

    def find(self, cond: dict, deadline: Deadline) -> List[dict]:
        import numpy as np
        with self.lock:
            rows = None
            if cond and _indexable(cond):
                try:   # the columns narrow it down; the filter engine decides
                    rows = np.asarray(self.archive.query(cond))
                except (ValueError, TypeError, KeyError):
                    rows = None
            if rows is None:
                rows = np.arange(len(self.archive))
            out = []
            for k, i in enumerate(rows.tolist()):
                if k % 512 == 0:
                    deadline.check()
                doc = self.archive.task(i)
                if not cond or matches(doc, cond):
                    out.append(doc)
            return out

    def task(self, task_id: str) -> dict:
        from flowcept.record.layout import parse_task_id
        parse_task_id(task_id)   # ValueError on a malformed id
        with self.lock:
            return self.archive.task(task_id)

    def workflows(self) -> Dict[str, dict]:
        with self.lock:
            return self.archive.workflows

    def lineage(self, task_id: str, up: bool, deadline: Deadline) -> List[dict]:
        with self.lock:
            sel = self.archive.ancestors(task_id) if up else self.archive.descendants(task_id)
            return self._docs(sel)

    def prov(self, workflow: Optional[str] = None) -> dict:
        with self.lock:
            return self.archive.to_prov(workflow=workflow)

    def close(self) -> None:
        self.archive.close()


_COLUMN_FIELDS = {"activity_id", "rank", "status", "workflow_id", "task_id", "hostname",
                  "thread_id", "start_ns", "end_ns"}
_COLUMN_OPS = {"$eq", "$in", "$gt", "$gte", "$lt", "$lte"}


def _indexable(cond: dict) -> bool:
    """Whether the archive's column query treats every term exactly as the filter
    engine does (plain fields and value-kind operators), so narrowing by it
    cannot drop a match; anything else is matched task by task."""
    from flowcept.query.filters import field_ops
    for key, spec in cond.items():
        if key == "$and":
            if not all(isinstance(c, dict) and _indexable(c) for c in spec):
                return False
            continue
        if key not in _COLUMN_FIELDS:
            return False
        for op, arg in field_ops(spec).items():
            if op not in _COLUMN_OPS:
                return False
            vals = arg if op == "$in" else [arg]
            if not isinstance(vals, list) or any(isinstance(v, bool) or v is None for v in vals):
                return False
            if key in ("rank", "thread_id", "start_ns", "end_ns") and \
                    not all(isinstance(v, int) for v in vals):
                return False
            if key in ("activity_id", "hostname", "workflow_id", "task_id", "status") and \
                    not all(isinstance(v, str) for v in vals):
                return False
            if key in ("workflow_id", "task_id", "status") and op != "$eq" and op != "$in":
                return False
    return True


# -- lineage over task dicts (stores; the same rule as flowcept.archive.lineage) ----------
def dict_lineage(docs: List[dict], task_id: str, up: bool) -> List[dict]:
    """Ancestors (up) or descendants of a task among docs: parent links and data
    dependencies (a used value equal to an earlier generated one)."""
    from collections import defaultdict
    from flowcept.archive.lineage import scalar_values
    by_id = {d["task_id"]: i for i, d in enumerate(docs)}
    if task_id not in by_id:
        raise KeyError(f"no task {task_id}")
    children = defaultdict(list)
    producers = defaultdict(list)
    consumers = defaultdict(list)
    used, gen = [], []
    for i, d in enumerate(docs):
        if d.get("parent_task_id") in by_id:
            children[by_id[d["parent_task_id"]]].append(i)
        u = scalar_values(d.get("used")) if isinstance(d.get("used"), dict) else []
        g = scalar_values(d.get("generated")) if isinstance(d.get("generated"), dict) else []
        used.append(u)
        gen.append(g)
        for v in set(g):
            producers[v].append(i)
        for v in set(u):
            consumers[v].append(i)
    start = by_id[task_id]
    seen, stack = {start}, [start]
    while stack:
        j = stack.pop()
        nxt = []
        if up:
            p = docs[j].get("parent_task_id")
            if p in by_id:
                nxt.append(by_id[p])
            for v in used[j]:
                nxt.extend(k for k in producers.get(v, ()) if docs[k]["end_ns"] <= docs[j]["start_ns"])
        else:
            nxt.extend(children.get(j, ()))
            for v in gen[j]:
                nxt.extend(k for k in consumers.get(v, ()) if docs[k]["start_ns"] >= docs[j]["end_ns"])
        for k in nxt:
            if k not in seen:
                seen.add(k)
                stack.append(k)
    seen.discard(start)
    return [docs[i] for i in seen]


# -- picking a source ----------------------------------------------------------------------
def is_archive(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def open_source(spec: str, name: Optional[str] = None, cache_dir: Optional[str] = None) -> Source:
    """A source for a store dir, an archive file or a store URL."""
    name = name or os.path.basename(spec.rstrip("/")) or spec
    if "://" in spec:
        return StoreSource.at_url(name, spec)
    if os.path.isfile(spec):
        if not is_archive(spec):
            raise ValueError(f"{spec}: not an HDF5 archive (pass a .h5 written by `flowcept compact`, "
                             "or a run/store directory)")
        return ArchiveSource(name, spec)
    if os.path.isdir(spec):
        return StoreSource.at_dir(name, spec, cache_dir)
    raise FileNotFoundError(f"{spec}: no such store directory, archive or URL")
