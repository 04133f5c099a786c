"""What bounds a query: its budget, and the checks that refuse a hostile
request before any data is read.

* :class:`BadRequest` (a ValueError): a request that cannot be answered as
  asked; the message says what to change (the service answers 400).
* :class:`QueryTimeout`: a query ran past its budget (the service answers 503).
* :class:`Budget`: wall-clock seconds and CPU seconds of the thread that
  runs the query, checked between blocks and every few hundred rows, so a
  query past its budget stops within one block's work.  The engine never
  holds a lock that other queries need while it works, so one slow query
  cannot hold up the others beyond its share of the CPU.
* :func:`parse_json`: JSON text of a request, refused (not a RecursionError)
  when it nests deeper than a bound.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Optional

MAX_JSON_DEPTH = 64


class BadRequest(ValueError):
    """A request that cannot be answered as asked (the service answers 4xx)."""


class QueryTimeout(Exception):
    """A query ran past its budget (the service answers 503)."""


class Budget:
    """A query's budget: ``seconds`` of wall clock and as many seconds of CPU
    (None or 0: unbounded).  ``check()`` raises QueryTimeout past either.
    CPU is counted on the threads that run the query's checks (a streamed
    answer may be driven from several threads in turn)."""

    __slots__ = ("seconds", "at", "cpu", "used", "_thread", "_t", "_n")

    def __init__(self, seconds: Optional[float] = None, cpu_seconds: Optional[float] = None):
        if seconds is not None and seconds <= 0:
            seconds = None
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds
        self.cpu = seconds if cpu_seconds is None else cpu_seconds
        self.used = 0.0
        self._thread = threading.get_ident()
        self._t = time.thread_time()
        self._n = 0

    def cpu_used(self) -> float:
        """CPU seconds the query's threads spent so far (between checks)."""
        now = time.thread_time()
        me = threading.get_ident()
        if me == self._thread:
            self.used += max(0.0, now - self._t)
        self._thread, self._t = me, now
        return self.used

    def check(self) -> None:
        if self.at is None:
            return
        if time.monotonic() > self.at or self.cpu_used() > self.cpu:
            raise QueryTimeout(f"query took longer than its {self.seconds:g} s budget; narrow the "
                               "filter (activity_id, rank, workflow_id, started_at) or raise "
                               "--query-timeout")

    def tick(self, rows: int = 1) -> None:
        """check() about every 256 rows of per-row work."""
        self._n += rows
        if self._n >= 256:
            self._n = 0
            self.check()


UNBOUNDED = Budget(None)


def json_depth(text) -> int:
    """How deep the arrays and objects of JSON text nest (strings skipped),
    without parsing it: a linear scan."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text, what: str = "request", max_depth: int = MAX_JSON_DEPTH):
    """The value of JSON text; BadRequest when it is not JSON or nests deeper
    than max_depth (json.loads would recurse past Python's stack)."""
    if json_depth(text) > max_depth:
        raise BadRequest(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"{what} is not valid JSON ({e})") from None


def value_depth(value, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep lists and dicts nest in a value (counted iteratively; stops
    counting past ``limit``)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            items = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        else:
            continue
        if d > deepest:
            deepest = d
            if d > limit:
                return d
        stack.extend((x, d + 1) for x in items if isinstance(x, (dict, list, tuple)))
    return deepest
