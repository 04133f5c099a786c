"""Level 1 of a query: whether a block of rows can hold a match, from its
summary alone (the per-batch index of a store, the per-block index of an
archive).  Conservative: False only when no row of the block can match; a
summary without the key a condition needs says "may match"."""
from __future__ import annotations

from flowcept.query.filters import field_ops
from flowcept.record.layout import parse_task_id


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]


def _range_may(lo, hi, op, arg) -> bool:
    """Whether some value in [lo, hi] satisfies `op arg` (numbers)."""
    try:
        if op == "$eq":
            return lo <= arg <= hi
        if op == "$in":
            return any(_range_may(lo, hi, "$eq", a) for a in _as_list(arg))
        if op == "$gt":
            return hi > arg
        if op == "$gte":
            return hi >= arg
        if op == "$lt":
            return lo < arg
        if op == "$lte":
            return lo <= arg
    except TypeError:
        return False   # a number field compared with a non-number never matches
    return True


def _set_may(values, op, arg) -> bool:
    if op == "$eq":
        return arg in values
    if op == "$in":
        return any(a in values for a in _as_list(arg))
    if op == "$ne":
        return not (len(values) == 1 and arg in values)
    if op == "$nin":
        return not set(values) <= set(_as_list(arg))
    return True


def _parse_tid(text):
    try:
        return parse_task_id(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _field_may(summary: dict, field: str, op: str, arg) -> bool:
    try:
        return _field_may_at(summary, field, op, arg)
    except (KeyError, TypeError, ValueError):
        return True   # the summary cannot answer this condition


def _field_may_at(summary: dict, field: str, op: str, arg) -> bool:
    s = summary
    if field == "rank":
        return _range_may(s["r0"], s["r1"], op, arg)
    if field in ("started_at", "start_ns"):
        scale = 1e9 if field == "started_at" else 1
        return _range_may(s["t0"] / scale if scale != 1 else s["t0"],
                          s.get("s1", s["t1"]) / scale if scale != 1 else s.get("s1", s["t1"]), op, arg)
    if field in ("ended_at", "end_ns"):
        scale = 1e9 if field == "ended_at" else 1
        lo = s.get("e0", s["t0"])
        return _range_may(lo / scale if scale != 1 else lo,
                          s["t1"] / scale if scale != 1 else s["t1"], op, arg)
    if field == "workflow_id":
        return _set_may({f"{w:016x}" for w in s["wf"]}, op, arg)
    if field == "activity_id":
        return _set_may(set(s["act"]), op, arg)
    if field == "hostname" and "host" in s:
        return _set_may({s["host"]}, op, arg)
    if field == "status":
        if op == "$eq":
            if arg == "ERROR":
                return s.get("err", 1) > 0
            if arg in ("FINISHED", "RUNNING"):
                return s.get("err", 0) < s["n"]
            return False
        if op == "$in":
            return any(_field_may(s, field, "$eq", a) for a in _as_list(arg))
        return True
    if field == "task_id":
        if op == "$eq":
            p = _parse_tid(arg)
            if p is None:
                return False
            wf, tid = p
            return wf in s["wf"] and s["id0"] <= tid <= s["id1"]
        if op == "$in":
            return any(_field_may(s, field, "$eq", a) for a in _as_list(arg))
        return True
    return True


def batch_may_match(summary: dict, cond: dict) -> bool:
    """False only when no task of the batch can match (conservative)."""
    try:
        return _may(summary, cond)
    except (KeyError, TypeError, ValueError):
        return True   # what the summary cannot answer, the rows decide


def _may(summary: dict, cond: dict) -> bool:
    if summary.get("n", 0) == 0:
        return False
    for key, spec in cond.items():
        if key == "$and":
            if not all(_may(summary, c) for c in spec):
                return False
        elif key == "$or":
            if not any(_may(summary, c) for c in spec):
                return False
        elif key.startswith("$"):
            continue
        else:
            for op, arg in field_ops(spec).items():
                if not _field_may(summary, key, op, arg):
                    return False
    return True
