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
