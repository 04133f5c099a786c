"""Read backends of the access layer: one small interface, three kinds of place.

* :class:`StoreSource` -- store directories (a run, job or store dir; any
  backend that wrote a ``store.json``) and URL stores (``scheme://...``,
  opened through the ``flowcept.stores`` entry point named by the scheme,
  so a MongoDB store plugs in by registering itself);
* :class:`ArchiveSource` -- one HDF5 archive (``flowcept.archive.open``).

Every source is a read-path table (``flowcept.query.engine.Table``: the
stores' batches, or the archive's blocks), so what sits above (core,
service, MCP, CLI) asks the same engine the same questions whatever the
backend: filters on columns in blocks, documents only for the rows handed
out.  Sources keep their stores and archive open and take no lock while a
query runs (LMDB and MongoDB reads are per query; h5py serialises its own
calls), so a slow query never holds up another.

``open_source(spec)`` picks the kind from what ``spec`` is (a file with the
HDF5 signature, a directory, a URL); no backend is named here.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Dict, List, Optional

from flowcept.query import engine
from flowcept.query.documents import documents
from flowcept.query.limits import Budget, QueryTimeout
from flowcept.query.lineage import LineageIndex

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Older name of the budget (wall clock and CPU seconds of one query).
Deadline = Budget


class Source:
    """What the access layer needs of a backend: a read-path ``table`` plus
    workflows, lineage and PROV.  Subclasses fill in ``table`` and the rest."""
    kind = "base"

    def __init__(self, name: str, location: str):
        self.name = name
        self.location = location
        self._counts: "OrderedDict[tuple, int]" = OrderedDict()
        self._count_lock = threading.Lock()   # the cache's bookkeeping only
        self._lineage: Optional[tuple] = None  # (generation, LineageIndex)
        self._lineage_lock = threading.Lock()
        self._lineage_build: Optional[IndexBuild] = None   # one build at a time

    @property
    def table(self) -> engine.Table:
        raise NotImplementedError

    def find(self, cond: dict, deadline: Budget) -> List[dict]:
        """Task dicts matching the (validated) filter, in table order."""
        return engine.find(self.table, cond, deadline)

    def count(self, cond: dict, deadline: Budget) -> int:
        """How many tasks match; remembered per filter until the data change."""
        key = self._count_key(cond)
        with self._count_lock:
            n = self._counts.get(key)
            if n is not None:
                self._counts.move_to_end(key)
                return n
        n = engine.count(self.table, cond, deadline)
        self.remember_count(cond, n)
        return n

    def _count_key(self, cond) -> tuple:
        return (self.table.generation(), json.dumps(cond, sort_keys=True, default=str))

    def known_count(self, cond: dict) -> Optional[int]:
        """The number of matches when it is remembered (None: not counted yet)."""
        key = self._count_key(cond)
        with self._count_lock:
            return self._counts.get(key)

    def remember_count(self, cond: dict, n: int) -> None:
        """Keeps a number of matches learned otherwise (a page that saw them all)."""
        key = self._count_key(cond)
        with self._count_lock:
            self._counts[key] = n
            while len(self._counts) > 256:
                self._counts.popitem(last=False)

    def task(self, task_id: str) -> dict:
        """One task; KeyError when absent."""
        docs, _ = engine.page(self.table, {"task_id": task_id}, engine_order(), 1)
        if not docs:
            raise KeyError(f"no task {task_id} in {self.name}")
        return docs[0]

    def workflows(self) -> Dict[str, dict]:
        raise NotImplementedError

    def lineage(self, task_id: str, up: bool, deadline: Budget) -> List[dict]:
        """Ancestors (up) or descendants of a task (KeyError when absent), walked
        on the table's lineage index, built once per change of the data."""
        index = self.lineage_index(deadline)
        rows = index.walk(index.row_of(task_id), up, deadline)
        out: List[dict] = []
        where = index.locate(rows)
        for (_ref, block), (_i, sel) in zip(self.table.blocks([index.refs[i] for i, _s in where]), where):
            out.extend(documents(block, sel))
        return out

    def lineage_index(self, deadline: Budget) -> LineageIndex:
        """The lineage index of the data as they are now. Building it reads every
        block (tens of seconds at 10 M tasks), more than one query's budget: so it
        is built in a thread of its own, which a query past its budget leaves
        running (QueryTimeout says how far it is), and a later query finds done."""
        gen = self.table.generation()
        while True:
            with self._lineage_lock:
                if self._lineage is not None and self._lineage[0] == gen:
                    return self._lineage[1]
                build = self._lineage_build
                if build is None or (build.finished() and build.generation != gen):
                    build = self._lineage_build = IndexBuild(self.table, gen, self.name)
            build.wait(deadline)
            with self._lineage_lock:
                if self._lineage_build is build:
                    self._lineage_build = None
                if build.error is not None:
                    raise build.error
                if build.generation == gen:
                    self._lineage = (gen, build.index)
                    return build.index
            # it was an older build (the data changed since it began): build again

    def prov(self, workflow: Optional[str] = None) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "location": self.location}

    def close(self) -> None:
        pass


class IndexBuild:
    """One build of a table's LineageIndex in a daemon thread; queries wait on
    it within their own budgets."""

    def __init__(self, table: engine.Table, generation, name: str):
        self.generation = generation
        self.name = name
        self.index: Optional[LineageIndex] = None
        self.error: Optional[BaseException] = None
        self.blocks_done = 0
        self.blocks = len(table.refs(None))
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(table,), daemon=True,
                         name=f"flowcept-lineage-index-{name}").start()

    def check(self) -> None:
        """Called by LineageIndex once per block read: progress, never a limit."""
        self.blocks_done += 1

    def _run(self, table) -> None:
        try:
            self.index = LineageIndex(table, self)
        except BaseException as e:   # handed to every query that waits on this build
            self.error = e
        finally:
            self._done.set()

    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, deadline: Budget) -> None:
        """Until the build is done; QueryTimeout when the query's budget ends first."""
        while not self._done.wait(0.05):
            try:
                deadline.check()
            except QueryTimeout:
                stage = (f"{self.blocks_done} of {self.blocks} blocks read" if self.blocks_done < self.blocks
                         else f"all {self.blocks} blocks read, linking")
                raise QueryTimeout(f"the lineage index of {self.name} is being built ({stage}); "
                                   "ask again in a few seconds") from None


def engine_order():
    from flowcept.query.documents import DEFAULT_SORT
    return DEFAULT_SORT


# -- stores ------------------------------------------------------------------------------
class _CachedStoreTable(engine.StoreTable):
    """A StoreTable whose summaries are read once per change of the stores
    (a committed batch never changes; new ones change ``generation``)."""

    def __init__(self, stores):
        super().__init__(stores)
        self._refs = None
        self._gen = None
        self._lock = threading.Lock()

    def generation(self):
        return tuple(json.dumps(s.stats(), sort_keys=True, default=str) for s in self.stores)

    def refs(self, cond=None):
        gen = self.generation()
        with self._lock:
            refs, known = self._refs, self._gen
        if refs is None or known != gen:
            refs = super().refs(None)
            with self._lock:
                self._refs, self._gen = refs, gen
        if not cond:
            return list(refs)
        return [r for r in refs if engine.batch_may_match(r.summary, cond)]


class StoreSource(Source):
    kind = "store"

    def __init__(self, name: str, location: str, openers: List, cache_dir: Optional[str] = None):
        super().__init__(name, location)
        self.openers = openers
        self.cache_dir = cache_dir
        self._prov_archive = None
        self._prov_key = None
        self._table = None
        self._open_lock = threading.Lock()   # opening the stores once
        self._prov_lock = threading.Lock()   # building the PROV archive once

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

    @property
    def table(self) -> engine.Table:
        if self._table is None:
            with self._open_lock:
                if self._table is None:
                    stores = []
                    try:
                        for opener in self.openers:
                            stores.append(opener())
                    except BaseException:
                        for s in stores:
                            s.close()
                        raise
                    self._table = _CachedStoreTable(stores)
        return self._table

    def workflows(self) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        for store in self.table.stores:
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
        return self.prov_archive().prov(workflow)

    def prov_archive(self) -> "ArchiveSource":
        if "://" in self.location or not self.cache_dir:
            raise ValueError(f"PROV export of {self.name} needs an archive: run "
                             f"`flowcept compact {self.location}` and serve the .h5")
        from flowcept.archive import compact
        with self._prov_lock:
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
            return self._prov_archive

    def close(self) -> None:
        if self._prov_archive is not None:
            self._prov_archive.close()
            self._prov_archive = None
        if self._table is not None:
            self._table.close()
            self._table = None


# -- archives ----------------------------------------------------------------------------
class ArchiveSource(Source):
    kind = "archive"

    def __init__(self, name: str, path: str):
        super().__init__(name, path)
        import flowcept.archive
        self.archive = flowcept.archive.open(path)
        self._table = self.archive.table()

    @property
    def table(self) -> engine.Table:
        return self._table

    def task(self, task_id: str) -> dict:
        from flowcept.record.layout import parse_task_id
        parse_task_id(task_id)   # ValueError on a malformed id
        return self.archive.task(task_id)

    def workflows(self) -> Dict[str, dict]:
        return self.archive.workflows

    def prov(self, workflow: Optional[str] = None) -> dict:
        return self.archive.to_prov(workflow=workflow)

    def close(self) -> None:
        self.archive.close()


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
