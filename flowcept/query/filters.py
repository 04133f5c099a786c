"""Mongo-style filters on task documents, shared by the LMDB query
(flowcept.query.search) and the HDF5 archive reader (flowcept.archive).

A filter is a dict of field -> value or field -> {"$op": arg, ...}, with
top-level $and / $or / $nor lists.  Comparisons are type-strict, like
MongoDB's: a number never equals a string, booleans are not numbers, and
$gt/$lt only compare values of the same kind.  A list value matches when
the list itself or any of its elements matches (so tags: {"$in": [...]}
works).  An absent field equals None and fails every ordering.
"""
from __future__ import annotations

import functools
import numbers
import re
from typing import Any, Dict, Iterable

from flowcept.query.limits import BadRequest

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex")
MISSING = object()   # the value of an absent field


def is_number(v) -> bool:
    t = type(v)
    if t is int or t is float:
        return True
    if t is bool or t is str or v is None or t.__name__ == "bool_":
        return False
    return isinstance(v, numbers.Real)


def as_list(arg, op: str) -> list:
    """The array argument of $in/$nin/$and/$or/$nor."""
    if isinstance(arg, (list, tuple, set, frozenset)) or type(arg).__name__ == "ndarray":
        return list(arg)
    raise ValueError(f"{op} takes a list, got {arg!r}")


def field_ops(spec, allowed: Iterable[str] = OPERATORS) -> Dict[str, Any]:
    """{"$op": arg} of one field's condition (a bare value means $eq)."""
    if isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec):
        allowed = tuple(allowed)
        for k in spec:
            if k not in allowed:
                raise ValueError(f"unknown operator {k!r}; supported: {', '.join(allowed)} "
                                 "(and $and/$or/$nor at the top level)")
        return spec
    if isinstance(spec, dict) and any(isinstance(k, str) and k.startswith("$") for k in spec):
        raise ValueError(f"mixed operators and fields in {spec!r}")
    return {"$eq": spec}


def _same_kind(a, b) -> bool:
    if is_number(a) and is_number(b):
        return True
    return any(isinstance(a, kind) and isinstance(b, kind) for kind in (str, bool, bytes))


def _equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return type(a) is type(b) and a == b
    return _same_kind(a, b) and a == b


def _ordered(a, op: str, b) -> bool:
    if not _same_kind(a, b) or isinstance(a, bool):
        return False
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    return a <= b


def match_value(value, op: str, arg) -> bool:
    """One operator on one document value (MISSING when the field is absent)."""
    if op == "$eq":
        if value is MISSING:
            return arg is None
        if isinstance(value, list):
            return _equal(value, arg) or any(_equal(x, arg) for x in value)
        return _equal(value, arg)
    if op == "$ne":
        return not match_value(value, "$eq", arg)
    if op == "$in":
        return any(match_value(value, "$eq", x) for x in as_list(arg, op))
    if op == "$nin":
        return not match_value(value, "$in", arg)
    if op == "$exists":
        return (value is not MISSING) == bool(arg)
    if op == "$regex":
        pattern = compile_regex(arg)
        values = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and pattern.search(v) is not None for v in values)
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"unknown operator {op!r}; supported: {', '.join(OPERATORS)}")
    if value is MISSING:
        return False
    if isinstance(value, list):
        return any(_ordered(x, op, arg) for x in value)
    return _ordered(value, op, arg)


MAX_REGEX = 256
# what RE2 (linear time) refuses, by the text of the pattern: named for the user
_REGEX_FEATURES = (
    (re.compile(r"\(\?<?[=!]"), "lookaround ((?=...), (?!...), (?<=...), (?<!...))"),
    (re.compile(r"\\[1-9]|\(\?P=|\\k<"), "backreferences (\\1, (?P=name))"),
    (re.compile(r"\(\?>"), "atomic groups ((?>...))"),
    (re.compile(r"\(\?\("), "conditionals ((?(...)...))"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers (*+, ++, ?+)"),
)


def compile_regex(pattern):
    """A compiled $regex pattern (RE2: matching time linear in the text, so
    no pattern can stall a query); BadRequest naming what RE2 refuses
    (backreferences, lookaround, ...) or why the pattern is bad."""
    if not isinstance(pattern, str):
        raise BadRequest(f"$regex takes a pattern string, got {pattern!r}"[:300])
    return _compile_regex(pattern)


@functools.lru_cache(maxsize=256)
def _compile_regex(pattern: str):
    if len(pattern) > MAX_REGEX:
        raise BadRequest(f"$regex pattern is {len(pattern)} characters; at most {MAX_REGEX}")
    try:
        import re2
    except ImportError:  # pragma: no cover - google-re2 is a dependency
        raise BadRequest("$regex needs the linear-time RE2 engine: pip install google-re2") from None
    try:
        return re2.compile(pattern)
    except Exception as e:   # re2.error: name the feature when we can
        for probe, feature in _REGEX_FEATURES:
            if probe.search(pattern):
                raise BadRequest(f"$regex: {feature} are not supported (patterns run in linear "
                                 f"time with RE2); rewrite {pattern!r} without them") from None
        raise BadRequest(f"$regex: bad pattern {pattern!r}: {e}") from None


def get_path(doc, path: str):
    """doc["a"]["b"] for "a.b"; MISSING when any step is absent."""
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return MISSING
    return cur


def matches(doc: dict, cond: dict) -> bool:
    """Whether one document satisfies a filter."""
    for key, spec in cond.items():
        if key == "$and":
            if not all(matches(doc, c) for c in as_list(spec, key)):
                return False
        elif key == "$or":
            if not any(matches(doc, c) for c in as_list(spec, key)):
                return False
        elif key == "$nor":
            if any(matches(doc, c) for c in as_list(spec, key)):
                return False
        elif key.startswith("$"):
            raise ValueError(f"unsupported top-level operator {key!r}; use $and, $or or $nor")
        elif not all(match_value(get_path(doc, key), op, arg) for op, arg in field_ops(spec).items()):
            return False
    return True


# -- the vectorised engine: one evaluator, a column provider per store --------------------------
class Columns:
    """What a store offers the engine for a set of rows (a column provider).

    ``field_mask(field, op, arg, rows)`` answers one operator for the given
    row numbers as a bool array, or returns None when the store has no
    column for that field; the engine then matches ``documents(rows)`` (one
    dict per row) with ``match_value``.  A provider that cannot build
    documents (an index-only prefilter) returns None there too: the rows then
    *may* match, and the answer is a superset.  ``cost(field)`` orders the
    conditions, cheap first (columns before documents)."""

    def field_mask(self, field: str, op: str, arg, rows):
        return None

    def documents(self, rows):
        return None

    def cost(self, field: str) -> int:
        return 0


def mask(flt, provider: Columns, rows):
    """Rows (an int array) of ``provider`` that satisfy a Mongo-style filter:
    ``(bool array, exact)``; exact is False when some condition could only
    be bounded (then the array is a superset of the matches)."""
    import numpy as np
    rows = np.asarray(rows, np.int64)
    if not isinstance(flt, dict):
        raise ValueError(f"a filter is a dict, got {flt!r}")

    def cost(item):
        key = item[0]
        return 1 if key.startswith("$") else 2 * provider.cost(key)

    out = np.ones(len(rows), bool)
    exact = True
    for step, (key, spec) in enumerate(sorted(flt.items(), key=cost)):
        if step:
            live = np.flatnonzero(out)
            if not len(live):
                break
            sub = rows[live]
        else:   # every row is still in question: no gather
            live, sub = slice(None), rows
        if key in ("$and", "$or", "$nor"):
            parts = as_list(spec, key)
            if key == "$and":
                m = np.ones(len(sub), bool)
                for f in parts:
                    idx = np.flatnonzero(m)
                    if not len(idx):
                        break
                    m[idx], e = mask(f, provider, sub[idx])
                    exact &= e
            else:
                m = np.zeros(len(sub), bool)
                sub_exact = True
                for f in parts:
                    idx = np.flatnonzero(~m)
                    if not len(idx):
                        break
                    m[idx], e = mask(f, provider, sub[idx])
                    sub_exact &= e
                if key == "$nor":
                    m = ~m if sub_exact else np.ones(len(sub), bool)   # not of a superset: unknown
                exact &= sub_exact
        elif key.startswith("$"):
            raise ValueError(f"unsupported top-level operator {key!r}; use $and, $or or $nor")
        else:
            m = np.ones(len(sub), bool)
            for op, arg in field_ops(spec).items():
                idx = np.flatnonzero(m)
                if not len(idx):
                    break
                r = provider.field_mask(key, op, arg, sub[idx])
                if r is None:
                    docs = provider.documents(sub[idx])
                    if docs is None:
                        exact = False
                        continue
                    r = np.fromiter((match_value(get_path(d, key), op, arg) for d in docs),
                                    bool, len(docs))
                m[idx] = r
        out[live] = m
    return out, exact
