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
              limit=None, cursor: Optional[str] = None, count: bool = False) -> dict:
        """One page of matching tasks: the top ``limit`` in the sort order,
        found on columns block by block (blocks whose index cannot beat the
        page are not read), resuming right after the cursor's row.
        ``total`` is the number of matches when ``count`` asks for it (counted
        once per filter and remembered until the data change), or when it is
        known anyway (remembered, or every match was seen reading the page);
        else None: a first page does not count all matches."""
        return self._task_page(source, filter, projection, sort, limit, cursor, count, False)

    def tasks_json(self, source: Optional[str] = None, filter=None, projection=None, sort=None,
                   limit=None, cursor: Optional[str] = None, count: bool = False) -> bytes:
        """``tasks()`` as the HTTP service's body: the bytes JSONResponse would
        write for it (compact, UTF-8), with the items written from the columns
        (``flowcept.query.documents.json_text``)."""
        return self._task_page(source, filter, projection, sort, limit, cursor, count, True)

    def _task_page(self, source, filter, projection, sort, limit, cursor, count, as_json):
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        n = parse_limit(limit, maximum=self.max_limit)
        src = self.source(source)
        qh = _query_hash(src.name, flt, order)
        offset, after = decode_cursor(cursor, qh, keys=len(order))
        gen = src.table.generation()
        key = (src.name, gen, qh, n, cursor or "", tuple(fields or ()), bool(count), as_json)
        with self._page_lock:
            hit = self._pages.get(key)
            if hit is not None:
                self._pages.move_to_end(key)
                return hit if as_json else dict(hit)
        budget = self.deadline()
        keyed = engine.column_sortable(order) and after is not None
        page = engine.page_rows(src.table, flt, order, n, offset, after if keyed else None, budget)
        if page.total is not None:   # the page saw every match: the count is known
            src.remember_count(flt, page.total)
        total = src.count(flt, budget) if count else src.known_count(flt)
        end = offset + len(page)
        nxt = encode_cursor(end, qh, page.last if engine.column_sortable(order) else None) \
            if page.more and len(page) else None
        meta = {"source": src.name, "total": total, "count": len(page), "offset": offset,
                "next_cursor": nxt}
        if as_json:
            items = page.json(fields, "python", b",")
            head = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
            out = head[:-1] + b',"items":[' + items[:-1] + b"]}"
        else:
            out = dict(meta, items=[jsonable(d) for d in page.documents(fields)])
        with self._page_lock:   # the same page again (a dashboard's poll) until the data change
            self._pages[key] = out
            while len(self._pages) > 256:
                self._pages.popitem(last=False)
        return out if as_json else dict(out)

    def count(self, source: Optional[str] = None, filter=None) -> dict:
        """How many tasks match (counted on columns once per filter, remembered
        until the data change)."""
        flt = parse_filter(filter)
        src = self.source(source)
        return {"source": src.name, "total": src.count(flt, self.deadline())}

    def iter_tasks(self, source=None, filter=None, projection=None, sort=None, limit=None,
                   max_stream: Optional[int] = MAX_STREAM):
        """Every match (up to ``max_stream`` or ``limit``) in order, streamed:
        documents are built block by block as they are handed out.  Checked
        before the first document; the budget runs while it streams."""
        src, flt, order, fields, n = self._stream_request(source, filter, projection, sort, limit, max_stream)
        return self._stream(src, flt, order, fields, self.deadline(), n)

    def _stream_request(self, source, filter, projection, sort, limit, max_stream):
        """(source, filter, order, fields, limit) of a stream, checked before it begins."""
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        top = max_stream or None
        n = parse_limit(limit, default=top, maximum=top or (1 << 62)) if (limit or top) else None
        src = self.source(source)
        return src, flt, order, fields, n

    def _stream(self, src, flt, order, fields, budget, n):
        for part in engine.stream(src.table, flt, order, fields, budget, limit=n):
            for d in part:
                yield jsonable(d)

    def iter_json(self, source=None, filter=None, projection=None, sort=None, limit=None,
                  max_stream: Optional[int] = MAX_STREAM):
        """iter_pages as JSON lines, in chunks of bytes: exactly ``dumps_lines``
        of its documents, written from the columns (``engine.stream_json``)."""
        src, flt, order, fields, n = self._stream_request(source, filter, projection, sort, limit, max_stream)
        return engine.stream_json(src.table, flt, order, fields, self.deadline(), limit=n)

    def iter_pages(self, source=None, filter=None, projection=None, sort=None, limit=None,
                   max_stream: Optional[int] = MAX_STREAM):
        """iter_tasks in lists of documents (as the engine hands them out)."""
        src, flt, order, fields, n = self._stream_request(source, filter, projection, sort, limit, max_stream)
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
                # the key is the id every other route takes (a caller's own id, e.g.
                # Flowcept's uuid, stays in the workflow's document in Flowcept.db)
                "items": [jsonable({**v, "workflow_id": k}) for k, v in sorted(wfs.items())]}

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
        return self.tasks(source, cond, projection, None, limit, count=True)

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


# -- views over many tasks: runs, timeline, failure groups, lineage graph, export ----------------
# What the browser UI (and any client) shows of a whole run, computed here so that a page never
# receives more than it draws.  Built on the public Access methods above only.
TABLE_COLUMNS = ("task_id", "activity_id", "status", "rank", "hostname", "started_at", "duration_s")
RUN_COLUMNS = ("source", "workflow_id", "name", "campaign_id", "user", "job", "started_at",
               "ended_at", "duration_s", "ranks", "hosts", "tasks", "failures", "running")
EXPORT_FORMATS = {"csv": "text/csv", "jsonl": "application/x-ndjson",
                  "parquet": "application/vnd.apache.parquet"}
TIMELINE_ACTIVITIES = 8     # colours: the busiest activities of the window, the rest are "other"
MAX_TIMELINE_BINS = 4096
MAX_TIMELINE_ROWS = 512


def table_row(doc: dict, columns: Sequence[str]) -> list:
    """One flat row of a task for tables and CSV: scalars as they are, containers as JSON,
    ``duration_s`` computed from start_ns/end_ns."""
    from flowcept.query.filters import MISSING, get_path
    out = []
    for c in columns:
        if c == "duration_s" and "start_ns" in doc:
            v = (doc["end_ns"] - doc["start_ns"]) / 1e9
        else:
            v = get_path(doc, c)
        out.append("" if v is MISSING or v is None else v if isinstance(v, (str, int, float)) else
                   json.dumps(v, default=str))
    return out


def _all_of(flt, *more) -> dict:
    parts = [c for c in (flt, *more) if c]
    return {} if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


def _blocks(access: Access, source, flt: dict):
    """(block, rows) of every match, in chunks, in no particular order: the one place these
    views read many tasks, straight from the read path's column blocks under the query's
    budget (no document is built)."""
    src = access.source(source)
    budget = access.deadline()
    for _ref, block, rows in engine.matching(src.table, flt or None, budget):
        for k in range(0, len(rows), 65536):
            budget.check()
            yield block, rows[k:k + 65536]


def _time_columns(access: Access, source, flt: dict, keep_upto: int):
    """rank, start_ns, end_ns, failed, activity index (into the returned names) of every
    match, and, when they number at most ``keep_upto``, their (block, rows) for the rest."""
    import numpy as np
    from flowcept.record.layout import STATUS_ERROR
    names: Dict[str, int] = {}
    parts: Dict[str, list] = {"rank": [], "start_ns": [], "end_ns": [], "failed": [], "activity": []}
    kept: Optional[list] = []
    n = 0
    for block, rows in _blocks(access, source, flt):
        c = block.cols
        codes, inv = np.unique(c["activity"][rows], return_inverse=True)
        table = block.string_array()
        index = np.array([names.setdefault(str(table[k]) if k < len(table) else "", len(names))
                          for k in codes.tolist()], np.int64)
        parts["activity"].append(index[inv.reshape(-1)])
        parts["rank"].append(c["rank"][rows].astype(np.int64))
        parts["start_ns"].append(c["start_ns"][rows].astype(np.int64))
        parts["end_ns"].append(c["end_ns"][rows].astype(np.int64))
        parts["failed"].append(c["status"][rows] == STATUS_ERROR)
        n += len(rows)
        kept = kept + [(block, rows)] if kept is not None and n <= keep_upto else None
    cols = {k: np.concatenate(v) if v else np.zeros(0, bool if k == "failed" else np.int64)
            for k, v in parts.items()}
    return cols, sorted(names, key=names.get), kept


def runs(access: Access, query: Optional[str] = None, sort=None, limit=None, offset=None) -> dict:
    """Every workflow of every served source, with its campaign, user, span, ranks, task and
    failure counts; ``query`` keeps rows whose text fields contain it (any case)."""
    rows = []
    for s in access.list_sources():
        name = s["name"]
        wfs = access.workflows(name)["items"] or [{"workflow_id": None}]
        for wf in wfs:
            summ = access.workflow_summary(wf["workflow_id"], name)
            doc = summ["workflows"].get(wf["workflow_id"], {}) if wf["workflow_id"] else {}
            rows.append({"source": name, "kind": s.get("kind"), "workflow_id": wf["workflow_id"],
                         "name": doc.get("name"), "campaign_id": doc.get("campaign_id"),
                         "user": doc.get("user"), "job": doc.get("job"),
                         "started_at": summ["started_at"], "ended_at": summ["ended_at"],
                         "duration_s": summ["duration_s"], "ranks": len(summ["ranks"]),
                         "hosts": len(summ["hosts"]), "tasks": summ["tasks"],
                         "failures": summ["by_status"].get("ERROR", 0),
                         "running": summ["by_status"].get("RUNNING", 0)})
    if query:
        if len(query) > 256:
            raise BadRequest("the runs query is at most 256 characters")
        q = query.lower()
        rows = [r for r in rows if any(q in str(r[k]).lower() for k in
                                       ("source", "workflow_id", "name", "campaign_id", "user", "job")
                                       if r[k] is not None)]
    order = parse_sort(sort or "-started_at")
    for f, _d in order:
        if f not in RUN_COLUMNS and f != "task_id":
            raise BadRequest(f"runs sort by one of {', '.join(RUN_COLUMNS)}, not {f!r}")
    sort_docs(rows, [(f, d) for f, d in order if f != "task_id"] + [("source", 1), ("workflow_id", 1)])
    n = parse_limit(limit, default=100, maximum=1000)
    start = 0 if offset in (None, "") else _bounded_int(offset, "offset", 0, 1 << 40)
    page = rows[start:start + n]
    return jsonable({"total": len(rows), "offset": start, "count": len(page), "items": page})


def timeline(access: Access, source=None, filter=None, t0=None, t1=None, bins=800, max_rows=64,
             max_tasks=None) -> dict:
    """Tasks over time per rank, in the window [t0, t1] (epoch seconds; default: the span of
    the matches).  At most ``max_tasks`` (default ``bins``, i.e. no more tasks than pixels
    across) come back one by one (``mode: "tasks"``); past that, per row and time bin:
    busy (percent of the bin covered by tasks, summed over tasks), tasks started, errors
    started and the busiest activity (``mode: "bins"``).  Ranks are grouped into at most
    ``max_rows`` rows of consecutive ranks."""
    import numpy as np
    bins = _bounded_int(bins, "bins", 1, MAX_TIMELINE_BINS)
    max_rows = _bounded_int(max_rows, "max_rows", 1, MAX_TIMELINE_ROWS)
    max_tasks = bins if max_tasks in (None, "") else _bounded_int(max_tasks, "max_tasks", 0, 10_000)
    flt = parse_filter(filter)
    window = []
    lo = _seconds(t0, "t0")
    hi = _seconds(t1, "t1")
    if lo is not None and hi is not None and hi <= lo:
        raise BadRequest("t1 must be after t0")
    if lo is not None:
        window.append({"end_ns": {"$gte": int(lo * 1e9)}})
    if hi is not None:
        window.append({"start_ns": {"$lte": int(hi * 1e9)}})
    src = access.source(source).name
    cols, act_names, kept = _time_columns(access, src, _all_of(flt, *window), max_tasks)
    start = cols["start_ns"]
    end = np.maximum(cols["end_ns"], start)
    n = len(start)
    a_ns = int(lo * 1e9) if lo is not None else (int(start.min()) if n else 0)
    b_ns = int(hi * 1e9) if hi is not None else (int(end.max()) if n else 0)
    if b_ns <= a_ns:
        b_ns = a_ns + 1000
    ranks = cols["rank"]
    uranks = np.unique(ranks)
    nrows = min(len(uranks), max_rows)
    rank_pos = np.searchsorted(uranks, ranks)
    row_of = (rank_pos * nrows) // max(len(uranks), 1) if n else rank_pos
    group = (np.arange(len(uranks)) * nrows) // max(len(uranks), 1)
    firsts = uranks[np.searchsorted(group, np.arange(nrows), "left")].tolist()
    lasts = uranks[np.searchsorted(group, np.arange(nrows), "right") - 1].tolist()
    rows = [{"label": f"rank {f}" if f == la else f"ranks {f}-{la}", "ranks": [f, la]}
            for f, la in zip(firsts, lasts)]
    acts = np.array(act_names + [""], dtype=object)[:len(act_names)]
    act_code = cols["activity"]
    err = cols["failed"]
    busy_by_act = np.bincount(act_code, weights=(np.minimum(end, b_ns) - np.maximum(start, a_ns)).clip(0),
                              minlength=len(acts))
    by_busy = np.argsort(-busy_by_act, kind="stable")
    out = {"source": src, "t0": a_ns / 1e9, "t1": b_ns / 1e9, "t0_ns": a_ns, "t1_ns": b_ns, "tasks": n,
           "rows": rows}
    if n <= max_tasks:
        from flowcept.query.documents import columns
        ids = [columns(b, r, "none") for b, r in kept]   # in the order the columns were read
        task_id = np.concatenate([c["task_id"] for c in ids]) if ids else np.zeros(0, object)
        status = np.concatenate([c["status"] for c in ids]) if ids else np.zeros(0, object)
        order = np.lexsort((start, row_of))
        out.update(mode="tasks", activities=[str(acts[i]) for i in by_busy], items=[
            {"task_id": task_id[i], "row": int(row_of[i]), "rank": int(ranks[i]),
             "activity_id": str(acts[act_code[i]]), "status": status[i],
             "start": (int(start[i]) - a_ns) / 1e9, "end": (int(end[i]) - a_ns) / 1e9}
            for i in order.tolist()])
        return out
    # per row, activity and bin: the time tasks cover (first and last bin in part, those
    # between in full, through a difference array)
    width = (b_ns - a_ns) / bins
    top = by_busy[:TIMELINE_ACTIVITIES]
    colour = np.full(len(acts), len(top), np.int64)   # "other"
    colour[top] = np.arange(len(top))
    ncol = len(top) + (1 if len(acts) > len(top) else 0)
    span = b_ns - a_ns
    rs = np.clip(start - a_ns, 0, span)    # integer ns from the window start: bins exact at the edges
    re_ = np.clip(end - a_ns, 0, span)
    if span < (1 << 62) // bins:
        b0 = np.minimum(rs * bins // span, bins - 1)
        b1 = np.minimum(re_ * bins // span, bins - 1)
    else:   # a window of centuries: float bins are exact enough
        b0 = np.minimum((rs * (bins / span)).astype(np.int64), bins - 1)
        b1 = np.minimum((re_ * (bins / span)).astype(np.int64), bins - 1)
    s = np.clip(rs * (bins / span), b0, b0 + 1)
    e = np.clip(re_ * (bins / span), b1, b1 + 1)
    cell = (row_of * ncol + colour[act_code]) * bins
    size = nrows * ncol * bins
    same = b0 == b1
    cover = np.bincount(cell + b0, weights=np.where(same, e - s, b0 + 1 - s), minlength=size)
    cover += np.bincount(cell + b1, weights=np.where(same, 0.0, e - b1), minlength=size)
    diff = np.bincount(cell + np.minimum(b0 + 1, bins - 1), weights=(b1 > b0 + 1).astype(float), minlength=size)
    diff -= np.bincount(cell + b1, weights=(b1 > b0 + 1).astype(float), minlength=size)
    cover += np.cumsum(diff.reshape(-1, bins), axis=1).reshape(-1)
    cover = cover.reshape(nrows, ncol, bins)
    busy = cover.sum(axis=1)
    dominant = np.where(busy > 0, cover.argmax(axis=1), -1)
    inside = (start >= a_ns) & (start <= b_ns)
    at = (row_of * bins + b0)[inside]
    started = np.bincount(at, minlength=nrows * bins).reshape(nrows, bins)
    errors = np.bincount(at, weights=err[inside], minlength=nrows * bins).reshape(nrows, bins)
    names = [str(acts[i]) for i in top] + (["other"] if ncol > len(top) else [])
    out.update(mode="bins", bins=bins, width_s=width / 1e9, activities=names, cells={
        "busy": np.minimum(np.rint(busy * 100), 9999).astype(np.int64).tolist(),
        "activity": dominant.astype(np.int64).tolist(),
        "started": started.astype(np.int64).tolist(),
        "errors": errors.astype(np.int64).tolist()})
    return out


def _bounded_int(v, name: str, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer, got {v!r}") from None
    if n < lo or n > hi:
        raise BadRequest(f"{name} must be between {lo} and {hi} (got {n})")
    return n


def _seconds(v, name: str) -> Optional[float]:
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} is epoch seconds, got {v!r}") from None
    if not math.isfinite(x) or x < 0 or x > 9e9:   # ns since 1970 must fit in int64
        raise BadRequest(f"{name} is epoch seconds, got {v!r}")
    return x


def failure_groups(access: Access, source=None, filter=None, limit=None) -> dict:
    """Failed tasks grouped by error type: count, the activities and ranks they hit, first and
    last time, the commonest messages and a few task ids of each group."""
    flt = parse_filter(filter)
    n = parse_limit(limit, default=50, maximum=1000)
    src = access.source(source).name
    from flowcept.query.documents import columns
    chunks = [columns(b, r, "objects") for b, r in _blocks(access, src, _all_of(flt, {"status": "ERROR"}))]
    cols = {f: [x for c in chunks for x in c[f].tolist()] if chunks else []
            for f in ("task_id", "activity_id", "rank", "started_at", "error")}
    groups: Dict[str, dict] = {}
    first = sorted(range(len(cols["task_id"])), key=lambda i: (cols["started_at"][i], cols["task_id"][i]))
    for i in first:
        tid = cols["task_id"][i]
        e = cols["error"][i] if isinstance(cols["error"][i], dict) else {}
        kind = str(e.get("type") or "(no error recorded)")
        g = groups.setdefault(kind, {"type": kind, "count": 0, "activities": {}, "ranks": set(),
                                     "first_at": None, "last_at": None, "messages": {}, "task_ids": []})
        g["count"] += 1
        act = cols["activity_id"][i]
        g["activities"][act] = g["activities"].get(act, 0) + 1
        g["ranks"].add(int(cols["rank"][i]))
        t = float(cols["started_at"][i])
        g["first_at"] = t if g["first_at"] is None else min(g["first_at"], t)
        g["last_at"] = t if g["last_at"] is None else max(g["last_at"], t)
        msg = str(e.get("message", ""))[:500]
        if msg in g["messages"] or len(g["messages"]) < 1000:
            g["messages"][msg] = g["messages"].get(msg, 0) + 1
        if len(g["task_ids"]) < 5:
            g["task_ids"].append(tid)
    items = sorted(groups.values(), key=lambda g: (-g["count"], g["type"]))
    for g in items:
        ranks = sorted(g.pop("ranks"))
        g["ranks"] = {"count": len(ranks), "first": ranks[:20]}
        g["activities"] = dict(sorted(g["activities"].items(), key=lambda kv: (-kv[1], kv[0]))[:20])
        g["messages"] = [{"message": m, "count": c} for m, c in
                         sorted(g["messages"].items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    return jsonable({"source": src, "failures": len(cols["task_id"]), "groups": len(items), "items": items[:n]})


def lineage_graph(access: Access, task_id: str, source=None, max_nodes=None) -> dict:
    """A task with its nearest ancestors and descendants (at most ``max_nodes`` each way, the
    closest in time first) and the edges among them: ``parent`` (recorded inside) and
    ``data`` (a value used equal to one generated earlier; the rule of ``lineage``)."""
    from flowcept.query.lineage import scalar_values
    n = parse_limit(max_nodes, default=25, maximum=200)
    src = access.source(source).name
    fields = ["task_id", "activity_id", "status", "rank", "parent_task_id", "start_ns", "end_ns",
              "used", "generated"]
    focus = access.task(task_id, src)
    up = access.lineage(task_id, "ancestors", src, fields)
    down = access.lineage(task_id, "descendants", src, fields)
    ups = sorted(up["items"], key=lambda d: (-d["end_ns"], d["task_id"]))[:n]
    downs = sorted(down["items"], key=lambda d: (d["start_ns"], d["task_id"]))[:n]
    docs = [focus] + ups + downs
    side = {focus["task_id"]: "self", **{d["task_id"]: "up" for d in ups},
            **{d["task_id"]: "down" for d in downs}}
    edges, seen = [], set()
    producers: Dict[Any, List[dict]] = {}
    for d in docs:
        for v in set(scalar_values(d.get("generated"))):
            producers.setdefault(v, []).append(d)
    for d in docs:
        p = d.get("parent_task_id")
        if p in side and (p, d["task_id"]) not in seen:
            seen.add((p, d["task_id"]))
            edges.append({"from": p, "to": d["task_id"], "kind": "parent"})
        for v in set(scalar_values(d.get("used"))):
            for a in producers.get(v, ()):
                key = (a["task_id"], d["task_id"])
                if a is not d and a["end_ns"] <= d["start_ns"] and key not in seen:
                    seen.add(key)
                    edges.append({"from": a["task_id"], "to": d["task_id"], "kind": "data"})
    nodes = [{"task_id": d["task_id"], "activity_id": d.get("activity_id"), "status": d.get("status"),
              "rank": d.get("rank"), "started_at": d["start_ns"] / 1e9, "ended_at": d["end_ns"] / 1e9,
              "side": side[d["task_id"]]} for d in docs]
    return jsonable({"source": src, "task_id": task_id, "ancestors": up["count"],
                     "descendants": down["count"], "nodes": nodes, "edges": edges})


def export_tasks(access: Access, source=None, filter=None, projection=None, sort=None, limit=None,
                 fmt: str = "csv"):
    """(media type, file name, chunks of bytes) of every match (up to MAX_STREAM or ``limit``),
    streamed block by block: CSV (columns: the projection, or TABLE_COLUMNS), JSON lines (the
    service's documents) or Parquet (``flowcept export --format parquet``'s columns, every
    field, in start order; needs pyarrow).  A query past its budget after the answer has
    begun ends it with a last line saying so."""
    from flowcept.query.documents import dumps
    if fmt not in EXPORT_FORMATS:
        raise BadRequest(f"format is one of {', '.join(EXPORT_FORMATS)}")
    src = access.source(source)
    name = f"{src.name}-tasks.{fmt}"
    if fmt == "parquet":
        return EXPORT_FORMATS[fmt], name, _parquet_chunks(access, src, parse_filter(filter))
    cols = parse_projection(projection)
    if fmt == "jsonl":   # written from the columns (iter_json): the bytes of dumps_lines
        chunks = access.iter_json(src.name, filter, cols, sort, limit)

        def lines():
            try:
                yield from chunks
            except QueryTimeout as e:
                yield dumps({"error": str(e)}) + b"\n"
        return EXPORT_FORMATS[fmt], name, lines()
    import csv
    import io
    cols = cols or list(TABLE_COLUMNS)
    read = list(cols) + [f for f in ("start_ns", "end_ns") if "duration_s" in cols and f not in cols]
    parts = access.iter_pages(src.name, filter, read, sort, limit)

    def rows():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        try:
            for part in parts:
                w.writerows(table_row(jsonable(d), cols) for d in part)
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        except QueryTimeout as e:
            w.writerow([f"ERROR: {e}"])
        yield buf.getvalue().encode()
    return EXPORT_FORMATS[fmt], name, rows()


def _parquet_chunks(access: Access, src: Source, flt: dict):
    """The Parquet file of the matches (written by flowcept.access.parquet to a private
    temporary file, then sent and removed)."""
    import tempfile
    try:
        from flowcept.access.parquet import write_parquet
        write_parquet.__globals__["_pyarrow"]()
    except ImportError:
        raise BadRequest("Parquet export needs pyarrow: pip install 'flowcept[parquet]' (CSV and JSON "
                         "lines need nothing)") from None
    fd, path = tempfile.mkstemp(prefix="flowcept-export-", suffix=".parquet")
    os.close(fd)
    try:
        write_parquet(src.table, path, "json", flt or None, access.deadline())
    except BaseException:
        os.unlink(path)
        raise

    def chunks():
        try:
            with open(path, "rb") as f:
                while True:
                    block = f.read(1 << 20)
                    if not block:
                        break
                    yield block
        finally:
            os.unlink(path)
    return chunks()


def export_formats() -> List[str]:
    """The export formats this installation can write."""
    import importlib.util
    return [f for f in EXPORT_FORMATS if f != "parquet" or importlib.util.find_spec("pyarrow")]
