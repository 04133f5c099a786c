"""Rows into Flowcept task documents: the one place for projection, sort
order and cursors.

* :func:`documents` -- the documents of some rows of a block
  (``flowcept.query.frames.Block``), built by ``flowcept.record.document``;
  payloads are read and decoded only when a payload field is wanted.
* :func:`project` -- Mongo-style projection (a list of fields, dotted
  fields nested; or ``{field: 1|0}`` to include or exclude).
* :func:`sort_key` / :func:`sort_docs` -- one order of values for every
  way in, as MongoDB orders the kinds: missing and None, numbers, strings,
  objects, arrays, binary, booleans.
* :func:`parse_sort`, :func:`parse_projection` -- the forms requests give.
* :func:`encode_cursor` / :func:`decode_cursor` -- a position in a sorted
  answer: the sort key of the last row handed out (so the next page resumes
  after it without counting the rows before) and its offset.
* :func:`jsonable`, :func:`dumps` -- documents as JSON can carry them.
"""
from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from flowcept.query.filters import MISSING, get_path, is_number
from flowcept.query.limits import BadRequest, json_depth
from flowcept.record.document import (NO_PAYLOAD, PAYLOAD_ROOTS, assemble, decode_payloads,
                                      payload_fields)

DEFAULT_SORT = (("start_ns", 1), ("task_id", 1))
MAX_SORT_FIELDS = 8
MAX_CURSOR_CHARS = 4096
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")


# -- documents of rows -----------------------------------------------------------------------
def roots_of(fields: Optional[Sequence[str]]) -> Optional[set]:
    """The top-level fields a projection needs (None: all)."""
    if fields is None:
        return None
    return {f.split(".", 1)[0] for f in fields}


def wants_payload(fields: Optional[Sequence[str]]) -> bool:
    roots = roots_of(fields)
    return roots is None or any(r in PAYLOAD_ROOTS for r in roots)


def documents(block, rows, fields: Optional[Sequence[str]] = None, stats: Optional[dict] = None,
              bodies: Optional[list] = None) -> List[dict]:
    """The task documents of ``rows`` of ``block``, projected to ``fields``
    (None: whole documents).  ``bodies`` receives the decoded payloads.  The
    derived fields (ids as text, seconds, status names) are computed with
    numpy for the whole set of rows, then assembled by
    ``flowcept.record.document.assemble``."""
    rows = np.asarray(rows, np.int64)
    c = block.cols
    need = bodies is not None or wants_payload(fields)
    wf = c["workflow_id"][rows]
    pid = c["parent_id"][rows]
    parent = hex_ids(wf, pid).tolist()
    if not pid.all():
        for i in np.flatnonzero(pid == 0).tolist():
            parent[i] = None
    start = c["start_ns"][rows].astype(np.int64)
    end = c["end_ns"][rows].astype(np.int64)
    docs = assemble(
        hex_ids(wf, c["task_id"][rows]).tolist(), hex_ids(wf).tolist(), parent,
        block.names("activity", rows).tolist(), status_names(c["status"][rows]).tolist(),
        (start / 1e9).tolist(), (end / 1e9).tolist(), start.tolist(), end.tolist(),
        c["rank"][rows].tolist(), c["thread_id"][rows].tolist(), block.names("node", rows).tolist(),
        block.payloads(rows) if need else None, c["flags"][rows].tolist(), stats, bodies)
    if fields is not None:
        docs = [project(d, fields) for d in docs]
    return docs


def payload_documents(block, rows, stats: Optional[dict] = None) -> List[dict]:
    """Per row, only the payload fields of its document (what a filter on
    used.*, generated.*, tags, ... looks at)."""
    rows = np.asarray(rows, np.int64)
    out = []
    for body, ok in decode_payloads(block.payloads(rows), block.cols["flags"][rows].tolist(), stats):
        if body is NO_PAYLOAD:
            out.append({})
        elif ok and type(body) is dict and body.keys() <= _PAYLOAD_SET:
            out.append(body)          # already the payload part of the document (read only)
        else:
            out.append(payload_fields({}, body, ok))
    return out


_PAYLOAD_SET = frozenset(("used", "generated", "tags", "custom_metadata", "error"))


def status_names(codes: np.ndarray) -> np.ndarray:
    """The documents' status text of status codes (object array)."""
    from flowcept.record.document import status_name
    if not len(codes):
        return np.zeros(0, object)
    uniq, inv = np.unique(codes, return_inverse=True)
    return np.array([status_name(u) for u in uniq.tolist()] + [None], dtype=object)[:-1][inv.reshape(-1)]


# -- projection ------------------------------------------------------------------------------
def _set_path(doc: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    cur = doc
    for p in parents:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[leaf] = value


def _copy_along(doc: dict, path: List[str]) -> dict:
    """doc with the dicts along path copied (so popping a leaf changes no one else's)."""
    out = dict(doc)
    cur = out
    for p in path[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            break
        nxt = cur[p] = dict(nxt)
        cur = nxt
    return out


def project(doc: dict, spec) -> dict:
    """Mongo-style projection of one document: ``spec`` a list of fields to
    keep (dotted fields come back nested), or a dict ``{field: 1|0}``
    (fields given 1 are kept; given 0, dropped from the rest)."""
    if not spec:
        return doc
    if isinstance(spec, dict):
        include = [k for k, v in spec.items() if v]
        exclude = [k for k, v in spec.items() if not v]
    else:
        include, exclude = list(spec), []
    if include:
        out: Dict[str, Any] = {}
        for f in include:
            v = get_path(doc, f)
            if v is not MISSING:
                _set_path(out, f, v)
    else:
        out = doc
    for f in exclude:
        parts = f.split(".")
        out = _copy_along(out, parts)
        cur = out
        for p in parts[:-1]:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            cur.pop(parts[-1], None)
    return out


def parse_projection(spec) -> Optional[List[str]]:
    """"a,b.c", ["a", "b.c"] or {"a": 1} -> ["a", "b.c"] (None: whole documents)."""
    if spec is None or spec == "" or spec == [] or spec == {}:
        return None
    if isinstance(spec, str):
        fields = [p.strip() for p in spec.split(",") if p.strip()]
    elif isinstance(spec, dict):
        fields = [k for k, v in spec.items() if v]
    elif isinstance(spec, (list, tuple)):
        fields = [str(p) for p in spec]
    else:
        raise BadRequest("projection is \"field,field\" or a list of fields")
    if len(fields) > 128:
        raise BadRequest("project at most 128 fields")
    for f in fields:
        if not FIELD_RE.match(f):
            raise BadRequest(f"cannot project {f!r}: not a field name")
    return fields


# -- order -----------------------------------------------------------------------------------
def sort_key(value):
    """The place of a value in the one order every way in sorts by (MongoDB's
    order of kinds): missing/None < numbers < strings < objects < arrays <
    binary < booleans; within a kind, by value (objects and arrays by their
    JSON text)."""
    if value is None or value is MISSING:
        return (0, 0)
    if is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dict):
        return (3, json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, (list, tuple)):
        return (4, json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, (bytes, bytearray)):
        return (5, bytes(value))
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return (6, bool(value))
    return (7, str(value))


def sort_docs(docs: List[dict], order) -> List[dict]:
    """docs sorted in place by ``order``, ((field, 1|-1), ...) (a field name
    alone means ascending); stable."""
    if not order:
        return docs
    if isinstance(order, str):
        order = [(order, 1)]
    elif isinstance(order, tuple) and len(order) == 2 and isinstance(order[0], str):
        order = [order]
    for field, direction in reversed(list(order)):
        docs.sort(key=lambda d, f=field: sort_key(get_path(d, f)), reverse=direction < 0)
    return docs


def parse_sort(spec, total: bool = True) -> Tuple[Tuple[str, int], ...]:
    """"-started_at,task_id" or [["started_at", -1], ...] -> ((field, ±1), ...).
    ``total``: task_id is added last when missing, so the order is total and
    pages never overlap."""
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
                items.extend(parse_sort(it, total=False))
            elif isinstance(it, (list, tuple)) and len(it) == 2 and it[1] in (1, -1) \
                    and not isinstance(it[1], bool):
                items.append((str(it[0]), int(it[1])))
            else:
                raise BadRequest(f"sort items are \"field\", \"-field\" or [field, 1|-1], not {it!r}")
    else:
        raise BadRequest("sort is \"field,-field\" or a list of [field, 1|-1]")
    if len(items) > MAX_SORT_FIELDS:
        raise BadRequest(f"sort by at most {MAX_SORT_FIELDS} fields")
    for f, _d in items:
        if not FIELD_RE.match(f):
            raise BadRequest(f"cannot sort by {f!r}: not a field name")
    if total and not any(f == "task_id" for f, _ in items):
        items.append(("task_id", 1))
    return tuple(items)


# -- cursors -----------------------------------------------------------------------------------
def _cursor_value_ok(v) -> bool:
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -(1 << 64) < v < (1 << 64)
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, str):
        return len(v) <= 1024
    return False


def encode_cursor(offset: int, qhash: str, after: Optional[Sequence] = None) -> str:
    """A cursor: the next page starts at ``offset`` and, when ``after`` (the
    sort values of the last row handed out) is given, right after that row."""
    body: Dict[str, Any] = {"o": int(offset), "q": qhash}
    if after is not None:
        body["k"] = list(after)
    text = json.dumps(body, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: Optional[str], qhash: str, keys: int = 0) -> Tuple[int, Optional[list]]:
    """(offset, after) of a cursor this query handed out ((0, None) for none);
    BadRequest for anything else (foreign, damaged, out of range)."""
    if not cursor:
        return 0, None
    bad = "cursor is not one this service gave out; start without it"
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest(bad)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if json_depth(raw) > 2:
            raise ValueError
        d = json.loads(raw)
        offset, q = d["o"], d["q"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BadRequest(bad) from None
    if not isinstance(d, dict) or q != qhash:
        raise BadRequest("cursor belongs to a different query (filter/sort/source changed)")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= (1 << 53):
        raise BadRequest("bad cursor offset")
    after = d.get("k")
    if after is not None:
        if not isinstance(after, list) or (keys and len(after) != keys) or \
                not all(_cursor_value_ok(v) for v in after):
            raise BadRequest(bad)
    return offset, after


# -- JSON --------------------------------------------------------------------------------------
def jsonable(v):
    """Document values as JSON can carry them (bytes as hex, NaN as None, numpy to Python)."""
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


def _orjson():
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return None
    return orjson


def dumps(doc) -> bytes:
    """One document as compact JSON bytes (jsonable's rules), fast."""
    oj = _orjson()
    if oj is not None:
        try:
            return oj.dumps(doc, default=_oj_default)
        except (TypeError, ValueError):   # keys that are not text, integers past 64 bits
            pass
    return json.dumps(jsonable(doc), separators=(",", ":")).encode()


def _oj_default(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError


def dumps_many(values) -> List[bytes]:
    """Compact JSON of each value (dumps' rules).  orjson is called once for
    the whole list (a call per value costs several times more than the
    encoding): the values are separated by a string none of them holds
    (random, per call) and the output is cut there."""
    oj = _orjson()
    values = list(values)
    if oj is None or len(values) < 2:
        return [dumps(v) for v in values]
    import secrets
    token = "\x00fc" + secrets.token_hex(16)
    sep = oj.dumps(token)
    items: list = [None] * (2 * len(values) - 1)
    items[0::2] = values
    items[1::2] = [token] * (len(values) - 1)
    try:
        text = oj.dumps(items, default=_oj_default)
    except (TypeError, ValueError):   # keys that are not text, integers past 64 bits
        return [dumps(v) for v in values]
    parts = text[1:-1].split(b"," + sep + b",")
    if len(parts) != len(values):   # pragma: no cover - a value held the token
        return [dumps(v) for v in values]
    return parts


def dumps_lines(docs) -> bytes:
    """JSON lines of documents."""
    parts = dumps_many(docs)
    if not parts:
        return b""
    parts.append(b"")
    return b"\n".join(parts)


def dumps_python(doc) -> bytes:
    """One document as the HTTP service's page bodies carry it: ``jsonable``,
    then ``json.dumps(ensure_ascii=False)`` compact (what FastAPI's
    JSONResponse writes)."""
    return json.dumps(jsonable(doc), ensure_ascii=False, separators=(",", ":")).encode()


# -- documents as JSON text, written in C -----------------------------------------------------
# The text of documents of rows, straight from the block columns and the msgpack payloads
# (flowcept.native.docjson).  What is written is decided here: the fields (the projection),
# their order and the two styles, each the exact bytes of the Python path above --
# "orjson" (dumps / dumps_lines: JSON lines, streams, Parquet's JSON columns) and "python"
# (dumps_python: page bodies).  Rows whose payload is not plain msgpack are written by the
# Python path, row by row, in their place.
JSON_STYLES = ("orjson", "python")


def _native_json():
    try:
        from flowcept.native import docjson
    except ImportError:   # pragma: no cover - a pure-Python install
        return None
    return docjson


def _literal(text: str, style: str) -> bytes:
    """A string table entry as JSON text (b"" where only the Python path can write it)."""
    try:
        if style == "orjson":
            oj = _orjson()
            if oj is not None:
                return oj.dumps(text)
        out = json.dumps(text, ensure_ascii=style != "python").encode()
        return out
    except (TypeError, ValueError, UnicodeEncodeError):
        return b""


def _field_codes(fields, codes: dict):
    """The projection as the C writer's field codes (None: whole documents;
    False: a projection only the Python path writes, e.g. dotted fields)."""
    if fields is None:
        return None
    if not isinstance(fields, (list, tuple)):
        return False
    out, seen = [], set()
    for f in fields:
        if not isinstance(f, str) or "." in f:
            return False
        if f in seen:
            continue
        seen.add(f)
        if f in codes:
            out.append(codes[f])
    return out


def _doc_text(doc, style: str) -> bytes:
    return dumps(doc) if style == "orjson" else dumps_python(doc)


def _rows_for_c(native, blocks, bid: np.ndarray, row: np.ndarray, style: str, payloads: bool):
    """The C writer's rows (flowcept.native.docjson.Rows) of rows of several blocks, in order."""
    n = len(row)
    cols = {k: np.zeros(n, dt) for k, dt in (
        ("workflow_id", np.uint64), ("task_id", np.uint64), ("parent_id", np.uint64),
        ("start_ns", np.int64), ("end_ns", np.int64), ("rank", np.uint32), ("thread_id", np.uint32),
        ("activity", np.uint32), ("status", np.uint32), ("hostname", np.uint32), ("flags", np.uint16),
        ("payload", np.uint64), ("payload_len", np.uint32))}
    literals: List[bytes] = []
    index: Dict[str, int] = {}

    def lit(text: str) -> int:
        k = index.get(text)
        if k is None:
            k = index[text] = len(literals)
            literals.append(_literal(text, style))
        return k
    keep = []
    single = len(blocks) == 1 or (len(bid) and bid.min() == bid.max())
    for b in (np.unique(bid).tolist() if not single else [int(bid[0])] if n else []):
        pos = slice(None) if single else np.flatnonzero(bid == b)
        r = row if single else row[pos]
        blk = blocks[b]
        c = blk.cols
        for k in ("workflow_id", "task_id", "parent_id", "start_ns", "end_ns", "rank", "thread_id", "flags"):
            cols[k][pos] = c[k][r]
        table = blk.strings
        for col, out in (("activity", "activity"), ("node", "hostname")):
            uniq, inv = np.unique(c[col][r], return_inverse=True)
            names = [table[min(u, len(table) - 1)] if table else "" for u in uniq.tolist()]
            cols[out][pos] = np.array([lit(x) for x in names] or [0], np.uint32)[inv.reshape(-1)]
        from flowcept.record.document import status_name
        uniq, inv = np.unique(c["status"][r], return_inverse=True)
        cols["status"][pos] = np.array([lit(status_name(u)) for u in uniq.tolist()] or [0],
                                       np.uint32)[inv.reshape(-1)]
        if not payloads:
            continue
        lens = c["payload_len"][r]
        if getattr(blk.payload, "read", None) is not None:    # archives: read by chunk
            parts = blk.payloads(r)
            buf = np.frombuffer(b"".join(parts) or b"\0", np.uint8)
            starts = np.zeros(len(parts), np.uint64)
            if len(parts) > 1:
                np.cumsum(np.asarray(lens[:-1], np.uint64), out=starts[1:])
            addr = np.uint64(buf.__array_interface__["data"][0]) + starts
        else:
            buf = blk.payload if isinstance(blk.payload, np.ndarray) else \
                np.frombuffer(blk.payload if len(blk.payload) else b"\0", np.uint8)
            addr = np.uint64(buf.__array_interface__["data"][0]) + c["payload_off"][r].astype(np.uint64)
        keep.append(buf)
        cols["payload"][pos] = addr
        cols["payload_len"][pos] = lens
    return native.Rows(cols, literals, keep)


def json_text(blocks, bid, row, fields: Optional[Sequence[str]] = None, style: str = "orjson",
              sep: Optional[bytes] = b"\n", stats: Optional[dict] = None) -> bytes:
    """The documents of rows (row ``row[i]`` of block ``blocks[bid[i]]``, in
    that order), projected to ``fields``, as JSON text each followed by
    ``sep``: exactly ``dumps`` (style "orjson") or ``dumps_python`` (style
    "python") of ``documents()``.  Written in C (flowcept.native.docjson)
    where it can; rows it leaves, and projections it does not write (dotted
    fields), go through ``documents()``."""
    bid = np.asarray(bid, np.int64)
    row = np.asarray(row, np.int64)
    sep = sep or b""
    native = _native_json()
    codes = _field_codes(fields, native.FIELD_CODES) if native is not None else False
    if codes == []:         # an include projection of fields no document has
        return (b"{}" + sep) * len(row)
    if codes is False:
        return b"".join(_doc_text(d, style) + sep for d in _python_docs(blocks, bid, row, fields, stats))
    payloads = codes is None or any(c >= native.FIELD_CODES["used"] for c in codes)
    rows = _rows_for_c(native, blocks, bid, row, style, payloads)
    text, ends, state = native.docs_json(rows, codes, style, sep[0] if sep else None)
    left = np.flatnonzero(state == native.PYTHON_ROW)
    if not len(left):
        return text
    docs = _python_docs(blocks, bid[left], row[left], fields, stats)
    out, prev = [], 0
    for i, d in zip(left.tolist(), docs):
        at = int(ends[i])
        out.append(text[prev:at])
        out.append(_doc_text(d, style) + sep)
        prev = at
    out.append(text[prev:])
    return b"".join(out)


def _python_docs(blocks, bid: np.ndarray, row: np.ndarray, fields, stats) -> List[dict]:
    """documents() of rows of several blocks, in their order."""
    out: list = [None] * len(row)
    for b in np.unique(bid).tolist():
        pos = np.flatnonzero(bid == b)
        for p, d in zip(pos.tolist(), documents(blocks[b], row[pos], fields, stats)):
            out[p] = d
    return out


def payload_json(blocks, bid, row, stats: Optional[dict] = None) -> Dict[str, tuple]:
    """Per payload column (PAYLOAD_COLUMNS): (text, ends, present) -- the JSON
    text of each row's value (``columns(..., "json")``'s, exactly) one after
    the other, where each ends, and whether the row has one (False: the
    column's None) -- for rows as in ``json_text``; in C where it can."""
    bid = np.asarray(bid, np.int64)
    row = np.asarray(row, np.int64)
    native = _native_json()
    n = len(row)
    out: Dict[str, tuple] = {}
    if native is None:
        left = np.arange(n)
        base = {f: (b"", np.zeros(n, np.uint64), np.ones(n, bool)) for f in PAYLOAD_COLUMNS}
    else:
        rows = _rows_for_c(native, blocks, bid, row, "orjson", True)
        base, left = {}, None
        for f in PAYLOAD_COLUMNS:
            text, ends, state = native.value_json(rows, native.FIELD_CODES[f], "orjson")
            base[f] = (text, ends, state != native.ABSENT)
            if left is None:
                left = np.flatnonzero(state == native.PYTHON_ROW)
    docs = _python_payload_docs(blocks, bid[left], row[left], stats) if len(left) else []
    for f in PAYLOAD_COLUMNS:
        text, ends, present = base[f]
        if not len(left):
            out[f] = (text, ends, present)
            continue
        vals = [d.get(f) for d in docs]
        have = [i for i, v in enumerate(vals) if v is not None]
        texts = [b""] * len(vals)
        for i, t in zip(have, dumps_many([vals[i] for i in have])):
            texts[i] = t
        present = present.copy()
        present[left] = [v is not None for v in vals]
        extra = np.zeros(n, np.uint64)
        extra[left] = [len(t) for t in texts]
        parts, prev = [], 0
        for i, t in zip(left.tolist(), texts):
            at = int(ends[i])
            parts.append(text[prev:at])
            parts.append(t)
            prev = at
        parts.append(text[prev:])
        out[f] = (b"".join(parts), ends + np.cumsum(extra, dtype=np.uint64), present)
    return out


def _python_payload_docs(blocks, bid, row, stats) -> List[dict]:
    out: list = [None] * len(row)
    for b in np.unique(bid).tolist():
        pos = np.flatnonzero(bid == b)
        for p, d in zip(pos.tolist(), payload_documents(blocks[b], row[pos], stats)):
            out[p] = d
    return out


def payload_columns_json(block, rows, stats: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """``columns(block, rows, "json")``'s payload columns (str or None per row) through
    ``payload_json``."""
    rows = np.asarray(rows, np.int64)
    got = payload_json({0: block}, np.zeros(len(rows), np.int64), rows, stats)
    out = {}
    for f, (text, ends, present) in got.items():
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else ends
        col = np.empty(len(rows), object)
        col[:] = [text[a:b].decode() if p else None
                  for a, b, p in zip(starts.tolist(), ends.tolist(), present.tolist())]
        out[f] = col
    return out


def json_lines(block, rows, fields: Optional[Sequence[str]] = None, style: str = "orjson") -> bytes:
    """``json_text`` of rows of one block, one document a line."""
    rows = np.asarray(rows, np.int64)
    return json_text({0: block}, np.zeros(len(rows), np.int64), rows, fields, style)


# -- columns: the DataFrame / Parquet shape of documents ---------------------------------------
# One set of column names everywhere (Flowcept's document fields): read_tasks as a DataFrame,
# Archive.to_pandas, Flowcept.db.to_df and Parquet exports.
TABLE_FIELDS = ("task_id", "workflow_id", "parent_task_id", "activity_id", "status", "started_at",
                "ended_at", "start_ns", "end_ns", "rank", "thread_id", "hostname")
PAYLOAD_COLUMNS = ("used", "generated", "tags", "custom_metadata", "error")
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hex16(a: np.ndarray) -> np.ndarray:
    """uint64 values as 16 lowercase hex digits, (n, 16) uint8, without a Python loop."""
    b = np.ascontiguousarray(np.asarray(a, np.uint64).astype(">u8")).view(np.uint8).reshape(-1, 8)
    out = np.empty((len(b), 16), np.uint8)
    out[:, 0::2] = _HEX[b >> 4]
    out[:, 1::2] = _HEX[b & 15]
    return out


def hex_id_bytes(workflow_id: np.ndarray, ids: Optional[np.ndarray] = None) -> np.ndarray:
    """The ASCII of ``hex_ids``: (n, 16) or (n, 33) uint8, one row of text per id."""
    w = _hex16(workflow_id)
    if ids is None:
        return w
    dash = np.full((len(w), 1), ord("-"), np.uint8)
    return np.concatenate([w, dash, _hex16(ids)], axis=1)


def hex_ids(workflow_id: np.ndarray, ids: Optional[np.ndarray] = None) -> np.ndarray:
    """"<workflow hex>" (ids None) or "<workflow hex>-<id hex>" of each row, as a
    numpy unicode array, vectorised (the same text as the documents)."""
    b = hex_id_bytes(workflow_id, ids)
    return b.view(f"S{b.shape[1]}").reshape(-1).astype(f"U{b.shape[1]}")


def columns(block, rows, payload: str = "objects", stats: Optional[dict] = None) -> Dict[str, Any]:
    """Rows of a block as columns named like the documents' fields
    (TABLE_FIELDS, then PAYLOAD_COLUMNS unless ``payload`` is "none"):
    ``payload`` "objects" gives the values (dicts, lists; None when absent),
    "json" their JSON text (None when absent).  Fixed fields are built
    vectorised; payloads are decoded only when asked for."""
    rows = np.asarray(rows, np.int64)
    c = block.cols
    wf = c["workflow_id"][rows]
    pid = c["parent_id"][rows]
    parent = hex_ids(wf, pid).astype(object)
    parent[pid == 0] = None
    start = c["start_ns"][rows].astype(np.int64)
    end = c["end_ns"][rows].astype(np.int64)
    out: Dict[str, Any] = {
        "task_id": hex_ids(wf, c["task_id"][rows]),
        "workflow_id": hex_ids(wf),
        "parent_task_id": parent,
        "activity_id": block.names("activity", rows),
        "status": status_names(c["status"][rows]),
        "started_at": start / 1e9,
        "ended_at": end / 1e9,
        "start_ns": start,
        "end_ns": end,
        "rank": c["rank"][rows].astype(np.int64),
        "thread_id": c["thread_id"][rows].astype(np.int64),
        "hostname": block.names("node", rows),
    }
    if payload == "none":
        return out
    docs = payload_documents(block, rows, stats=stats)
    for f in PAYLOAD_COLUMNS:
        vals = [d.get(f) for d in docs]
        if payload == "json":
            have = [i for i, v in enumerate(vals) if v is not None]
            for i, text in zip(have, dumps_many([vals[i] for i in have])):
                vals[i] = text.decode()
        col = np.empty(len(vals), object)
        col[:] = vals
        out[f] = col
    return out


def dataframe(cols: Dict[str, Any]):
    """A pandas DataFrame of ``columns()`` output (needs pandas)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("a DataFrame needs pandas: pip install pandas") from None
    return pd.DataFrame(cols, columns=list(cols))


def concat_columns(parts: List[Dict[str, Any]], payload: str = "objects") -> Dict[str, Any]:
    """One set of columns of several."""
    names = list(TABLE_FIELDS) + ([] if payload == "none" else list(PAYLOAD_COLUMNS))
    if not parts:
        return {n: np.zeros(0, object) for n in names}
    return {n: np.concatenate([p[n] for p in parts]) for n in names}
