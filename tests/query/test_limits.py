"""Hostile requests, engine side: $regex through RE2 (linear time; refused
features named), deep nesting refused before parsing, cursors that decode to
absurd offsets refused, and a budget that bounds CPU as well as wall clock
without holding up other queries."""
import base64
import json
import os
import sys
import threading
import time

import pytest

from flowcept.access.core import Access, parse_filter
from flowcept.query.documents import decode_cursor, encode_cursor
from flowcept.query.filters import compile_regex, matches
from flowcept.query.limits import BadRequest, Budget, QueryTimeout, parse_json


def test_regex_is_linear_time_and_refusals_name_the_feature():
    # (a+)+$ backtracks exponentially in a backtracking engine; RE2 answers at once
    assert not matches({"activity_id": "a" * 64 + "b"}, {"activity_id": {"$regex": "(a+)+$"}})
    assert matches({"activity_id": "train"}, {"activity_id": {"$regex": "^tr.i"}})
    for pattern, feature in ((r"(a)\1", "backreferences"), ("a(?=b)", "lookaround"),
                             ("(?<!x)y", "lookaround"), ("(?P<n>a)(?P=n)", "backreferences"),
                             ("a++", "possessive")):
        with pytest.raises(BadRequest, match=feature):
            compile_regex(pattern)
        with pytest.raises(BadRequest, match=feature):
            parse_filter(json.dumps({"activity_id": {"$regex": pattern}}))
    with pytest.raises(BadRequest, match="bad pattern"):
        compile_regex("(")
    with pytest.raises(BadRequest, match="at most"):
        compile_regex("a" * 1000)
    with pytest.raises(BadRequest, match="pattern string"):
        compile_regex(["a"])


def test_deep_nesting_is_a_bad_request_not_a_recursion_error():
    for text in ("[" * 3000 + "]" * 3000, '{"a": ' + "[" * 3000 + "]" * 3000 + "}",
                 '{"$and": [' * 1000 + "{}" + "]}" * 1000):
        with pytest.raises(BadRequest, match="deeper"):
            parse_filter(text)
    deep = []
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(BadRequest, match="deeper"):
        parse_filter({"used.x": {"$eq": deep}})
    with pytest.raises(BadRequest):
        parse_json("[" * 5000)


def _cursor(body: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_cursors_out_of_range_are_bad_requests():
    assert decode_cursor(encode_cursor(5, "q1", ["x", 3]), "q1", keys=2) == (5, ["x", 3])
    bad = [_cursor({"o": 1e400, "q": "q1"}), _cursor({"o": -1, "q": "q1"}),
           _cursor({"o": 10 ** 30, "q": "q1"}), _cursor({"o": True, "q": "q1"}),
           _cursor({"o": 1.5, "q": "q1"}), _cursor({"o": 0, "q": "q1", "k": [1e400]}),
           _cursor({"o": 0, "q": "q1", "k": [[[]]]}), "%%%", "x" * 10_000,
           base64.urlsafe_b64encode(b"[" * 3000).decode()]
    for c in bad:
        with pytest.raises(BadRequest):
            decode_cursor(c, "q1", keys=1)
    with pytest.raises(BadRequest, match="different query"):
        decode_cursor(encode_cursor(5, "q1"), "q2")


def test_budget_bounds_cpu_and_wall_clock():
    b = Budget(600, cpu_seconds=0.2)   # the CPU runs out, the wall clock does not
    t0 = time.thread_time()
    with pytest.raises(QueryTimeout, match="budget"):
        while True:        # pure CPU
            sum(range(1000))
            b.check()
    assert time.thread_time() - t0 >= 0.2
    b = Budget(0.05, cpu_seconds=100)
    time.sleep(0.06)       # no CPU, the wall clock runs out
    with pytest.raises(QueryTimeout):
        b.check()
    Budget(None).check()
    Budget(0).check()      # 0: unbounded


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
    from framegen import frame_key, make_frame
    from flowcept.store.lmdb import LmdbStore
    path = str(tmp_path_factory.mktemp("big") / "store")
    st = LmdbStore(path)
    items = []
    for ring in range(4):
        for seq in range(25):
            f, _r, _d = make_frame(seq, 2000, ring_uid=ring + 1, rank=ring, origin=ring)
            items.append((frame_key(f), f))
    st.put_batches(items)
    st.close()
    return path


def test_a_query_past_its_budget_stops_and_does_not_hold_up_others(big_store):
    slow = {"generated.v": {"$lt": -1}, "used.i": {"$gte": 0}}   # every payload decoded
    acc = Access([big_store], query_timeout=0.3)
    try:
        with pytest.raises(QueryTimeout):
            acc.tasks(filter=slow)
    finally:
        acc.close()
    acc = Access([big_store], query_timeout=120)
    try:
        first = acc.tasks(limit=1)["items"][0]
        order = []
        started = threading.Event()

        def long_query():
            started.set()
            acc.stats("activity", filter=slow)
            order.append("long")

        t = threading.Thread(target=long_query)
        t.start()
        started.wait()
        time.sleep(0.05)
        got = acc.tasks(filter={"task_id": first["task_id"]})   # meanwhile, from another thread
        order.append("short")
        t.join()
        assert got["items"] == [first]
        assert order == ["short", "long"]
    finally:
        acc.close()


def test_exports_honour_their_budget_and_leave_no_file(big_store, tmp_path):
    from flowcept.access.parquet import export_parquet
    from flowcept.access.perfetto import export_perfetto
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for export, name in ((export_perfetto, "t.json"), (export_parquet, "t.parquet")):
        with pytest.raises(QueryTimeout):
            export(big_store, str(out_dir / name), budget=0.01, progress=False)
        assert os.listdir(out_dir) == []
    assert os.path.exists(export_perfetto(big_store, str(out_dir / "ok.json"), progress=False))
