"""The questions every way in asks, answered once: tasks (filter, projection,
sort, limit, cursor), one task, workflows, workflow summary, lineage,
statistics, failures, PROV.  The HTTP service, ``flowcept query``, the MCP
server and the agent all call :class:`Access`, so they answer identically.

Requests are checked before any data is read (:func:`validate_filter` and
friends raise :class:`BadRequest`, a ValueError, with a message saying what
to change); result sizes are capped (``max_limit``) and every query runs
under a time budget (``query_timeout`` seconds, then QueryTimeout).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from flowcept.access.sources import Source, open_source
from flowcept.query import engine
from flowcept.query.documents import (DEFAULT_SORT, decode_cursor, encode_cursor, jsonable,  # noqa: F401
                                      parse_projection, parse_sort, project, sort_docs)
from flowcept.query.filters import OPERATORS, compile_regex, field_ops  # noqa: F401
from flowcept.query.limits import BadRequest, Budget, QueryTimeout, parse_json, value_depth

Deadline = Budget   # the older name

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_STREAM = 1_000_000
MAX_FILTER_BYTES = 16_384
MAX_FILTER_DEPTH = 8
MAX_VALUE_DEPTH = 16
MAX_REGEX = 256
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class NotFound(KeyError):
    def __str__(self):
        return str(self.args[0]) if self.args else "not found"


# -- checking requests ---------------------------------------------------------------------
def parse_filter(text) -> dict:
    """A filter given as JSON text (or already a dict), checked."""
    if text is None or text == "":
        return {}
    if isinstance(text, (bytes, str)):
        if len(text) > MAX_FILTER_BYTES:
            raise BadRequest(f"filter is {len(text)} bytes; at most {MAX_FILTER_BYTES}")
        flt = parse_json(text, "filter", max_depth=2 * MAX_FILTER_DEPTH + MAX_VALUE_DEPTH)
    else:
        flt = text
    if value_depth(flt, 2 * MAX_FILTER_DEPTH + MAX_VALUE_DEPTH) > 2 * MAX_FILTER_DEPTH + MAX_VALUE_DEPTH:
        raise BadRequest(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
    validate_filter(flt)
    return flt


def validate_filter(flt, depth: int = 0) -> None:
    if not isinstance(flt, dict):
        raise BadRequest(f"a filter is a JSON object (Mongo-style), not {type(flt).__name__}")
    if depth > MAX_FILTER_DEPTH:
        raise BadRequest(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
    for key, spec in flt.items():
        if not isinstance(key, str) or not key:
            raise BadRequest(f"filter keys are field names, got {key!r}")
        if key in ("$and", "$or", "$nor"):
            if not isinstance(spec, list) or not spec:
                raise BadRequest(f"{key} takes a non-empty list of filters")
            for c in spec:
                validate_filter(c, depth + 1)
            continue
        if key.startswith("$"):
            raise BadRequest(f"unknown top-level operator {key!r}; use $and, $or or $nor")
        try:
            ops = field_ops(spec)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        for op, arg in ops.items():
            if value_depth(arg, MAX_VALUE_DEPTH) > MAX_VALUE_DEPTH:
                raise BadRequest(f"{op} on {key!r}: value nested deeper than {MAX_VALUE_DEPTH} levels")
            if op in ("$in", "$nin"):
                if not isinstance(arg, list):
                    raise BadRequest(f"{op} on {key!r} takes a list, got {arg!r}"[:300])
                if len(arg) > MAX_LIMIT:
                    raise BadRequest(f"{op} on {key!r} has {len(arg)} values; at most {MAX_LIMIT}")
            elif op == "$regex":
                if not isinstance(arg, str) or len(arg) > MAX_REGEX:
                    raise BadRequest(f"$regex on {key!r} takes a pattern of at most {MAX_REGEX} characters")
                compile_regex(arg)   # BadRequest naming what RE2 refuses
            elif op == "$exists" and not isinstance(arg, bool):
                raise BadRequest(f"$exists on {key!r} takes true or false")
            elif isinstance(arg, float) and not math.isfinite(arg):
                raise BadRequest(f"{op} on {key!r}: numbers must be finite")


def parse_limit(limit, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if limit is None or limit == "":
        return default
    if isinstance(limit, float) and not math.isfinite(limit):
        raise BadRequest(f"limit must be an integer, got {limit!r}")
    try:
        n = int(limit)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"limit must be an integer, got {limit!r}"[:200]) from None
    if n < 1 or n > maximum:
        raise BadRequest(f"limit must be between 1 and {maximum} (got {n}); page with the cursor "
                         "or use the streamed endpoint for more")
    return n


def check_task_id(task_id: str) -> str:
    from flowcept.record.layout import parse_task_id
    try:
        parse_task_id(task_id)
    except (ValueError, TypeError):
        raise BadRequest(f"{task_id!r} is not a task id (<workflow hex>-<task hex>, as in task_id)"[:300]) from None
    return task_id


def _query_hash(source: str, flt: dict, order) -> str:
    text = json.dumps([source, flt, order], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- the catalog and the questions -----------------------------------------------------------
class Access:
    """Read-only access to one or more named sources.

    ``specs``: store dirs, archive files, store URLs, or a directory of archives
    (each ``*.h5`` under it becomes a source named by its file name without .h5)."""

    def __init__(self, specs: Sequence[str], query_timeout: float = 10.0, max_limit: int = MAX_LIMIT,
                 cache_dir: Optional[str] = None):
        self.query_timeout = query_timeout
        self.max_limit = max_limit
        self.cache_dir = cache_dir
        self.sources: Dict[str, Source] = {}
        self._pages: "OrderedDict[tuple, dict]" = OrderedDict()
        self._page_lock = threading.Lock()   # the page cache's bookkeeping only
        for spec in specs:
            self._add(spec)
        if not self.sources:
            raise FileNotFoundError("nothing to serve: pass store directories, .h5 archives or store URLs")

    def _add(self, spec: str) -> None:
        from flowcept.access.sources import is_archive
        if os.path.isdir(spec) and not _has_store(spec):
            archives = sorted(f for f in os.listdir(spec) if f.endswith(".h5")
                              and is_archive(os.path.join(spec, f)))
            if archives:
                for f in archives:
                    self._put(open_source(os.path.join(spec, f), _name(f[:-3])))
                return
        base = os.path.basename(spec.rstrip("/")) if "://" not in spec else spec.split("://", 1)[0]
        if base.endswith(".h5"):
            base = base[:-3]
        self._put(open_source(spec, _name(base), cache_dir=self.cache_dir))

    def _put(self, src: Source) -> None:
        name, k = src.name, 2
        while name in self.sources:
            name, k = f"{src.name}-{k}", k + 1
        src.name = name
        self.sources[name] = src

    def close(self) -> None:
        for s in self.sources.values():
            s.close()

    def deadline(self) -> Deadline:
        return Deadline(self.query_timeout)

    def source(self, name: Optional[str]) -> Source:
        if name is None or name == "":
            if len(self.sources) == 1:
                return next(iter(self.sources.values()))
            raise BadRequest(f"several sources are served; pick one with source=: {', '.join(self.sources)}")
        if not NAME_RE.match(name) or ".." in name:
            raise BadRequest(f"{name!r} is not a source name (letters, digits, . _ -; no paths)")
        try:
            return self.sources[name]
        except KeyError:
            raise NotFound(f"no source {name!r}; served: {', '.join(self.sources)}") from None

    def list_sources(self) -> List[dict]:
        return [s.describe() for s in self.sources.values()]

    # tasks ----------------------------------------------------------------------------------
    def tasks(self, source: Optional[str] = None, filter=None, projection=None, sort=None,
              limit=None, cursor: Optional[str] = None) -> dict:
        """One page of matching tasks: the top ``limit`` in the sort order,
        found on columns block by block (blocks whose index cannot beat the
        page are not read), resuming right after the cursor's row."""
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        n = parse_limit(limit, maximum=self.max_limit)
        src = self.source(source)
        qh = _query_hash(src.name, flt, order)
        offset, after = decode_cursor(cursor, qh, keys=len(order))
        key = (src.name, src.table.generation(), qh, n, cursor or "", tuple(fields or ()))
        with self._page_lock:
            hit = self._pages.get(key)
            if hit is not None:
                self._pages.move_to_end(key)
                return dict(hit)
        budget = self.deadline()
        keyed = engine.column_sortable(order) and after is not None
        docs, last = engine.page(src.table, flt, order, n, offset, after if keyed else None,
                                 fields, budget)
        total = src.count(flt, budget)
        end = offset + len(docs)
        nxt = encode_cursor(end, qh, last if engine.column_sortable(order) else None) \
            if end < total and docs else None
        out = {"source": src.name, "total": total, "count": len(docs), "offset": offset,
               "next_cursor": nxt, "items": [jsonable(d) for d in docs]}
        with self._page_lock:   # the same page again (a dashboard's poll) until the data change
            self._pages[key] = out
            while len(self._pages) > 256:
                self._pages.popitem(last=False)
        return dict(out)

    def iter_tasks(self, source=None, filter=None, projection=None, sort=None, limit=None,
                   max_stream: Optional[int] = MAX_STREAM):
        """Every match (up to ``max_stream`` or ``limit``) in order, streamed:
        documents are built block by block as they are handed out.  Checked
        before the first document; the budget runs while it streams."""
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        top = max_stream or None
        n = parse_limit(limit, default=top, maximum=top or (1 << 62)) if (limit or top) else None
        src = self.source(source)
        budget = self.deadline()
        return self._stream(src, flt, order, fields, budget, n)

    def _stream(self, src, flt, order, fields, budget, n):
        for part in engine.stream(src.table, flt, order, fields, budget, limit=n):
            for d in part:
                yield jsonable(d)

    def iter_pages(self, source=None, filter=None, projection=None, sort=None, limit=None,
                   max_stream: Optional[int] = MAX_STREAM):
        """iter_tasks in lists of documents (as the engine hands them out)."""
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        top = max_stream or None
        n = parse_limit(limit, default=top, maximum=top or (1 << 62)) if (limit or top) else None
        src = self.source(source)
        return engine.stream(src.table, flt, order, fields, self.deadline(), limit=n)

    def task(self, task_id: str, source: Optional[str] = None) -> dict:
        check_task_id(task_id)
        try:
            return jsonable(self.source(source).task(task_id))
        except KeyError:
            raise NotFound(f"no task {task_id} in {self.source(source).name}") from None

    def lineage(self, task_id: str, direction: str = "ancestors", source: Optional[str] = None,
                projection=None) -> dict:
        check_task_id(task_id)
        if direction not in ("ancestors", "descendants"):
            raise BadRequest("direction is ancestors or descendants")
        src = self.source(source)
        fields = parse_projection(projection)
        try:
            docs = src.lineage(task_id, direction == "ancestors", self.deadline())
        except KeyError:
            raise NotFound(f"no task {task_id} in {src.name}") from None
        docs = sort_docs(list(docs), DEFAULT_SORT)
        return {"source": src.name, "task_id": task_id, "direction": direction, "count": len(docs),
                "items": [jsonable(project(d, fields)) for d in docs]}

    # workflows ------------------------------------------------------------------------------
    def workflows(self, source: Optional[str] = None) -> dict:
        src = self.source(source)
        wfs = src.workflows()
        return {"source": src.name, "count": len(wfs),
                "items": [jsonable({"workflow_id": k, **v}) for k, v in sorted(wfs.items())]}

    def workflow_summary(self, workflow_id: Optional[str] = None, source: Optional[str] = None) -> dict:
        src = self.source(source)
        if workflow_id is not None and not re.match(r"^[0-9a-fA-F]{1,16}$", workflow_id):
            raise BadRequest(f"{workflow_id!r} is not a workflow id (16 hex digits)")
        flt = {"workflow_id": workflow_id.lower().rjust(16, "0")} if workflow_id else {}
        s = engine.summarize(src.table, flt, self.deadline())
        wfs = src.workflows()
        if workflow_id and not s["tasks"] and flt["workflow_id"] not in wfs:
            raise NotFound(f"no workflow {workflow_id} in {src.name}")
        n = s["tasks"]
        return jsonable({
            "source": src.name, "workflow_id": flt.get("workflow_id"),
            "workflows": {k: v for k, v in sorted(wfs.items()) if not workflow_id or k == flt["workflow_id"]},
            "tasks": n, "by_status": s["by_status"], "by_activity": s["by_activity"],
            "ranks": s["ranks"], "hosts": s["hosts"],
            "started_at": s["start_ns"] / 1e9 if n else None,
            "ended_at": s["end_ns"] / 1e9 if n else None,
            "duration_s": (s["end_ns"] - s["start_ns"]) / 1e9 if n else 0.0})

    # statistics -------------------------------------------------------------------------------
    def stats(self, by: str = "activity", source: Optional[str] = None, filter=None) -> dict:
        """Per activity (or rank, host, status): count, errors, mean/p50/p95/p99/max/total
        duration in seconds, computed on columns (no payload is read)."""
        if by not in engine.STAT_GROUPS:
            raise BadRequest("by is activity, rank, hostname or status")
        flt = parse_filter(filter)
        src = self.source(source)
        n, rows = engine.group_stats(src.table, flt, by, self.deadline())
        return {"source": src.name, "by": by, "tasks": n, "items": jsonable(rows)}

    def failures(self, source: Optional[str] = None, filter=None, limit=None, projection=None) -> dict:
        flt = parse_filter(filter)
        cond = {"$and": [flt, {"status": "ERROR"}]} if flt else {"status": "ERROR"}
        return self.tasks(source, cond, projection, None, limit)

    # provenance -------------------------------------------------------------------------------
    def prov(self, source: Optional[str] = None, workflow: Optional[str] = None, fmt: str = "json"):
        """(media type, text) of a PROV document: json (PROV-JSON, no extra needed), or
        provn / xml / rdf (PROV-O, Turtle) through the ``prov`` library."""
        fmts = {"json": "application/json", "provn": "text/provenance-notation",
                "xml": "application/xml", "rdf": "text/turtle"}
        if fmt not in fmts:
            raise BadRequest(f"format is one of {', '.join(fmts)}")
        if workflow is not None and not re.match(r"^[0-9a-fA-F]{1,16}$", workflow):
            raise BadRequest(f"{workflow!r} is not a workflow id")
        doc = self.source(source).prov(workflow)
        text = json.dumps(doc)
        if fmt == "json":
            return fmts[fmt], text
        try:
            from prov.model import ProvDocument
        except ImportError:
            raise BadRequest("PROV-N/XML/RDF need the prov library: pip install 'flowcept[prov]'") from None
        pdoc = ProvDocument.deserialize(content=text, format="json")
        try:
            if fmt == "rdf":
                return fmts[fmt], pdoc.serialize(format="rdf", rdf_format="turtle")
            return fmts[fmt], pdoc.serialize(format=fmt)
        except Exception as e:
            if type(e).__name__ == "DoNotExist":   # the prov library lacks that serializer's extra
                raise BadRequest(f"{fmt}: {e}") from None
            raise


def _has_store(path: str) -> bool:
    for root, dirs, files in os.walk(path):
        if "store.json" in files:
            return True
        if root.count(os.sep) - path.count(os.sep) > 4:
            dirs[:] = []
    return False


def _name(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-") or "source"
    return s[:128]
