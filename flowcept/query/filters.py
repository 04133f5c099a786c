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

import numbers
import re
from typing import Any, Dict, Iterable

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex")
MISSING = object()   # the value of an absent field


def is_number(v) -> bool:
    if isinstance(v, bool) or type(v).__name__ == "bool_":
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
        values = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and re.search(arg, v) is not None for v in values)
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"unknown operator {op!r}; supported: {', '.join(OPERATORS)}")
    if value is MISSING:
        return False
    if isinstance(value, list):
        return any(_ordered(x, op, arg) for x in value)
    return _ordered(value, op, arg)


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
