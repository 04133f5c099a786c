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

import base64
import hashlib
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from flowcept.access.sources import Deadline, QueryTimeout, Source, open_source  # noqa: F401
from flowcept.query.filters import OPERATORS, field_ops

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_STREAM = 1_000_000
MAX_FILTER_BYTES = 16_384
MAX_FILTER_DEPTH = 8
MAX_REGEX = 256
DEFAULT_SORT = (("start_ns", 1), ("task_id", 1))
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BadRequest(ValueError):
    """A request that cannot be answered as asked (the service answers 4xx)."""


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
        try:
            flt = json.loads(text)
        except ValueError as e:
            raise BadRequest(f"filter is not valid JSON ({e}); e.g. "
                             '{"activity_id": "train", "rank": {"$in": [0, 1]}}') from None
    else:
        flt = text
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
            if op in ("$in", "$nin"):
                if not isinstance(arg, list):
                    raise BadRequest(f"{op} on {key!r} takes a list, got {arg!r}")
                if len(arg) > MAX_LIMIT:
                    raise BadRequest(f"{op} on {key!r} has {len(arg)} values; at most {MAX_LIMIT}")
            elif op == "$regex":
                if not isinstance(arg, str) or len(arg) > MAX_REGEX:
                    raise BadRequest(f"$regex on {key!r} takes a pattern of at most {MAX_REGEX} characters")
                try:
                    re.compile(arg)
                except re.error as e:
                    raise BadRequest(f"$regex on {key!r}: bad pattern: {e}") from None
            elif op == "$exists" and not isinstance(arg, bool):
                raise BadRequest(f"$exists on {key!r} takes true or false")
            elif isinstance(arg, float) and not math.isfinite(arg):
                raise BadRequest(f"{op} on {key!r}: numbers must be finite")


def parse_sort(spec) -> Tuple[Tuple[str, int], ...]:
    """"-started_at,task_id" or [["started_at", -1], ...] -> ((field, ±1), ...)."""
    if spec is None or spec == "" or spec == []:
        return DEFAULT_SORT
    items: List[Tuple[str, int]] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            items.append((part[1:], -1) if part.startswith("-") else (part.lstrip("+"), 1))
    elif isinstance(spec, (list, tuple)):
        for it in spec:
            if isinstance(it, str):
                items.extend(parse_sort(it))
            elif isinstance(it, (list, tuple)) and len(it) == 2 and it[1] in (1, -1):
                items.append((str(it[0]), int(it[1])))
            else:
                raise BadRequest(f"sort items are \"field\", \"-field\" or [field, 1|-1], not {it!r}")
    else:
        raise BadRequest("sort is \"field,-field\" or a list of [field, 1|-1]")
    if len(items) > 8:
        raise BadRequest("sort by at most 8 fields")
    for f, _d in items:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$", f):
            raise BadRequest(f"cannot sort by {f!r}: not a field name")
    if not any(f == "task_id" for f, _ in items):
        items.append(("task_id", 1))   # a total order, so pages never overlap
    return tuple(items)


def parse_projection(spec) -> Optional[List[str]]:
    if spec is None or spec == "" or spec == []:
        return None
    if isinstance(spec, str):
        fields = [p.strip() for p in spec.split(",") if p.strip()]
    elif isinstance(spec, dict):
        fields = [k for k, v in spec.items() if v]
    elif isinstance(spec, (list, tuple)):
        fields = [str(p) for p in spec]
    else:
        raise BadRequest("projection is \"field,field\" or a list of fields")
    for f in fields:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$", f):
            raise BadRequest(f"cannot project {f!r}: not a field name")
    return fields


def parse_limit(limit, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if limit is None or limit == "":
        return default
    try:
        n = int(limit)
    except (TypeError, ValueError):
        raise BadRequest(f"limit must be an integer, got {limit!r}") from None
    if n < 1 or n > maximum:
        raise BadRequest(f"limit must be between 1 and {maximum} (got {n}); page with the cursor "
                         "or use the streamed endpoint for more")
    return n


def check_task_id(task_id: str) -> str:
    from flowcept.record.layout import parse_task_id
    try:
        parse_task_id(task_id)
    except (ValueError, TypeError):
        raise BadRequest(f"{task_id!r} is not a task id (<workflow hex>-<task hex>, as in task_id)") from None
    return task_id


# -- sorting, projection, cursors ------------------------------------------------------------
def _sort_key(value):
    """Orders mixed values like MongoDB does for the common kinds: missing/None <
    numbers < strings < other (lists, dicts by their JSON)."""
    from flowcept.query.filters import is_number
    if value is None:
        return (0, 0)
    if is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, bool):
        return (4, value)
    return (3, json.dumps(value, sort_keys=True, default=str))


def sort_docs(docs: List[dict], order) -> List[dict]:
    from flowcept.query.filters import MISSING, get_path
    for field, direction in reversed(order):
        docs.sort(key=lambda d: _sort_key(None if (v := get_path(d, field)) is MISSING else v),
                  reverse=direction < 0)
    return docs


def project(doc: dict, fields: Optional[List[str]]) -> dict:
    if not fields:
        return doc
    from flowcept.query.filters import MISSING, get_path
    out: Dict[str, Any] = {}
    for f in fields:   # dotted fields come back nested, as MongoDB projects them
        v = get_path(doc, f)
        if v is MISSING:
            continue
        *parents, leaf = f.split(".")
        cur = out
        for p in parents:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[leaf] = v
    return out


def _query_hash(source: str, flt: dict, order) -> str:
    text = json.dumps([source, flt, order], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(offset: int, qhash: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": qhash}).encode()).decode().rstrip("=")


def decode_cursor(cursor: Optional[str], qhash: str) -> int:
    if not cursor:
        return 0
    try:
        pad = "=" * (-len(cursor) % 4)
        d = json.loads(base64.urlsafe_b64decode(cursor + pad))
        offset, q = int(d["o"]), d["q"]
    except (ValueError, KeyError, TypeError):
        raise BadRequest("cursor is not one this service gave out; start without it") from None
    if q != qhash:
        raise BadRequest("cursor belongs to a different query (filter/sort/source changed)")
    if offset < 0:
        raise BadRequest("bad cursor offset")
    return offset


def jsonable(v):
    """Task dict values as JSON can carry them (bytes as hex, NaN as None, numpy to Python)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if hasattr(v, "tolist"):
        return jsonable(v.tolist())
    return str(v)


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
    def _matching(self, source, flt, order) -> List[dict]:
        src = self.source(source)
        docs = src.find(flt, self.deadline())
        return sort_docs(docs, order)

    def tasks(self, source: Optional[str] = None, filter=None, projection=None, sort=None,
              limit=None, cursor: Optional[str] = None) -> dict:
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        n = parse_limit(limit, maximum=self.max_limit)
        src = self.source(source)
        qh = _query_hash(src.name, flt, order)
        offset = decode_cursor(cursor, qh)
        docs = self._matching(src.name, flt, order)
        page = docs[offset:offset + n]
        nxt = encode_cursor(offset + n, qh) if offset + n < len(docs) else None
        return {"source": src.name, "total": len(docs), "count": len(page), "offset": offset,
                "next_cursor": nxt, "items": [jsonable(project(d, fields)) for d in page]}

    def iter_tasks(self, source=None, filter=None, projection=None, sort=None, limit=None):
        """Every match (up to MAX_STREAM or limit), for streamed answers."""
        flt = parse_filter(filter)
        order = parse_sort(sort)
        fields = parse_projection(projection)
        n = parse_limit(limit, default=MAX_STREAM, maximum=MAX_STREAM)
        docs = self._matching(source, flt, order)
        return (jsonable(project(d, fields)) for d in docs[:n])

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
        docs = src.find(flt, self.deadline())
        wfs = src.workflows()
        if workflow_id and not docs and flt["workflow_id"] not in wfs:
            raise NotFound(f"no workflow {workflow_id} in {src.name}")
        by_act: Dict[str, Dict[str, int]] = {}
        for d in docs:
            by_act.setdefault(d["activity_id"], {}).setdefault(d["status"], 0)
            by_act[d["activity_id"]][d["status"]] += 1
        status: Dict[str, int] = {}
        for d in docs:
            status[d["status"]] = status.get(d["status"], 0) + 1
        span = (min(d["start_ns"] for d in docs), max(d["end_ns"] for d in docs)) if docs else (0, 0)
        return jsonable({
            "source": src.name, "workflow_id": flt.get("workflow_id"),
            "workflows": {k: v for k, v in sorted(wfs.items()) if not workflow_id or k == flt["workflow_id"]},
            "tasks": len(docs), "by_status": dict(sorted(status.items())),
            "by_activity": {k: dict(sorted(v.items())) for k, v in sorted(by_act.items())},
            "ranks": sorted({d["rank"] for d in docs}),
            "hosts": sorted({d["hostname"] for d in docs}),
            "started_at": span[0] / 1e9 if docs else None, "ended_at": span[1] / 1e9 if docs else None,
            "duration_s": (span[1] - span[0]) / 1e9 if docs else 0.0})

    # statistics -------------------------------------------------------------------------------
    def stats(self, by: str = "activity", source: Optional[str] = None, filter=None) -> dict:
        """Per activity (or rank, host, status): count, errors, mean/p50/p95/max/total
        duration in seconds."""
        import numpy as np
        if by not in ("activity", "rank", "hostname", "status"):
            raise BadRequest("by is activity, rank, hostname or status")
        flt = parse_filter(filter)
        src = self.source(source)
        docs = sort_docs(src.find(flt, self.deadline()), DEFAULT_SORT)   # same sums everywhere
        key = {"activity": "activity_id"}.get(by, by)
        groups: Dict[Any, List[dict]] = {}
        for d in docs:
            groups.setdefault(d[key], []).append(d)
        rows = []
        for g in sorted(groups, key=_sort_key):
            ds = groups[g]
            dur = np.array([d["end_ns"] - d["start_ns"] for d in ds], np.int64) / 1e9
            p50, p95, p99, mx = np.percentile(dur, [50, 95, 99, 100])
            rows.append({by: g, "count": len(ds), "errors": sum(d["status"] == "ERROR" for d in ds),
                         "mean_s": float(dur.mean()), "p50_s": float(p50), "p95_s": float(p95),
                         "p99_s": float(p99), "max_s": float(mx), "total_s": float(dur.sum())})
        return {"source": src.name, "by": by, "tasks": len(docs), "items": jsonable(rows)}

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


def _columns(access: Access, source, flt: dict, fields: Sequence[str]) -> Tuple[Dict[str, list], bool]:
    """The projected fields of every match, as lists (the one place these views read many
    tasks), and whether the answer stopped at MAX_STREAM."""
    cols: Dict[str, list] = {f: [] for f in fields}
    n = 0
    for d in access.iter_tasks(source, flt, list(fields), None, MAX_STREAM):
        for f in fields:
            cols[f].append(d.get(f))
        n += 1
    return cols, n >= MAX_STREAM


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
    cols, truncated = _columns(access, src, _all_of(flt, *window),
                               ("task_id", "rank", "start_ns", "end_ns", "status", "activity_id"))
    start = np.array(cols["start_ns"], np.int64)
    end = np.maximum(np.array(cols["end_ns"], np.int64), start)
    n = len(start)
    a_ns = int(lo * 1e9) if lo is not None else (int(start.min()) if n else 0)
    b_ns = int(hi * 1e9) if hi is not None else (int(end.max()) if n else 0)
    if b_ns <= a_ns:
        b_ns = a_ns + 1000
    ranks = np.array(cols["rank"], np.int64)
    uranks = np.unique(ranks)
    nrows = min(len(uranks), max_rows)
    rank_pos = np.searchsorted(uranks, ranks)
    row_of = (rank_pos * nrows) // max(len(uranks), 1) if n else rank_pos
    group = (np.arange(len(uranks)) * nrows) // max(len(uranks), 1)
    firsts = uranks[np.searchsorted(group, np.arange(nrows), "left")].tolist()
    lasts = uranks[np.searchsorted(group, np.arange(nrows), "right") - 1].tolist()
    rows = [{"label": f"rank {f}" if f == la else f"ranks {f}-{la}", "ranks": [f, la]}
            for f, la in zip(firsts, lasts)]
    acts, act_code = np.unique(np.array(cols["activity_id"], dtype=object).astype(str), return_inverse=True) \
        if n else (np.array([], dtype=str), np.zeros(0, np.int64))
    err = np.array([s == "ERROR" for s in cols["status"]], bool)
    busy_by_act = np.bincount(act_code, weights=(np.minimum(end, b_ns) - np.maximum(start, a_ns)).clip(0),
                              minlength=len(acts))
    by_busy = np.argsort(-busy_by_act, kind="stable")
    out = {"source": src, "t0": a_ns / 1e9, "t1": b_ns / 1e9, "t0_ns": a_ns, "t1_ns": b_ns, "tasks": n,
           "truncated": truncated, "rows": rows}
    if n <= max_tasks:
        order = np.lexsort((start, row_of))
        out.update(mode="tasks", activities=[str(acts[i]) for i in by_busy], items=[
            {"task_id": cols["task_id"][i], "row": int(row_of[i]), "rank": int(ranks[i]),
             "activity_id": str(acts[act_code[i]]), "status": cols["status"][i],
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
    cols, truncated = _columns(access, src, _all_of(flt, {"status": "ERROR"}),
                               ("task_id", "activity_id", "rank", "started_at", "error"))
    groups: Dict[str, dict] = {}
    for i, tid in enumerate(cols["task_id"]):
        e = cols["error"][i] if isinstance(cols["error"][i], dict) else {}
        kind = str(e.get("type") or "(no error recorded)")
        g = groups.setdefault(kind, {"type": kind, "count": 0, "activities": {}, "ranks": set(),
                                     "first_at": None, "last_at": None, "messages": {}, "task_ids": []})
        g["count"] += 1
        act = cols["activity_id"][i]
        g["activities"][act] = g["activities"].get(act, 0) + 1
        g["ranks"].add(cols["rank"][i])
        t = cols["started_at"][i]
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
    return jsonable({"source": src, "failures": len(cols["task_id"]), "truncated": truncated,
                     "groups": len(items), "items": items[:n]})


def lineage_graph(access: Access, task_id: str, source=None, max_nodes=None) -> dict:
    """A task with its nearest ancestors and descendants (at most ``max_nodes`` each way, the
    closest in time first) and the edges among them: ``parent`` (recorded inside) and
    ``data`` (a value used equal to one generated earlier; the rule of ``lineage``)."""
    from flowcept.archive.lineage import scalar_values
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
    """(media type, file name, chunks of bytes) of every match (up to MAX_STREAM or ``limit``)
    as CSV (columns: the projection, or TABLE_COLUMNS), JSON lines (the service's documents)
    or Parquet (pyarrow; columns as in CSV, values typed)."""
    if fmt not in EXPORT_FORMATS:
        raise BadRequest(f"format is one of {', '.join(EXPORT_FORMATS)}")
    src = access.source(source).name
    cols = parse_projection(projection)
    name = f"{src}-tasks.{fmt}"
    if fmt == "jsonl":
        docs = access.iter_tasks(src, filter, cols, sort, limit)
        return EXPORT_FORMATS[fmt], name, (json.dumps(d).encode() + b"\n" for d in docs)
    cols = cols or list(TABLE_COLUMNS)
    read = list(cols) + [f for f in ("start_ns", "end_ns") if "duration_s" in cols and f not in cols]
    docs = access.iter_tasks(src, filter, read, sort, limit)
    if fmt == "csv":
        import csv
        import io

        def chunks():
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(cols)
            for k, d in enumerate(docs):
                w.writerow(table_row(d, cols))
                if k % 1024 == 1023:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue().encode()
        return EXPORT_FORMATS[fmt], name, chunks()
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BadRequest("Parquet export needs pyarrow: pip install pyarrow (CSV and JSON lines need "
                         "nothing)") from None
    import io
    rows = [table_row(d, cols) for d in docs]
    table = pa.table({c: _arrow_column(pa, [r[i] for r in rows]) for i, c in enumerate(cols)})
    out = io.BytesIO()
    pq.write_table(table, out)
    return EXPORT_FORMATS[fmt], name, iter([out.getvalue()])


def _arrow_column(pa, values: list):
    """Typed where the values agree (ints, floats, text); missing values are nulls."""
    vals = [None if v == "" else v for v in values]
    kinds = {type(v) for v in vals if v is not None}
    if kinds <= {int}:
        return pa.array(vals, pa.int64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in vals], pa.float64())
    return pa.array([None if v is None else str(v) for v in vals], pa.string())


def export_formats() -> List[str]:
    """The export formats this installation can write."""
    import importlib.util
    return [f for f in EXPORT_FORMATS if f != "parquet" or importlib.util.find_spec("pyarrow")]
