import pytest

from flowcept.query.filters import MISSING, field_ops, match_value, matches

DOC = {"activity_id": "diffuse", "rank": 2, "tags": ["io", "prep"], "used": {"n": 5, "name": "x"},
       "ok": True}


@pytest.mark.parametrize("cond,want", [
    ({"rank": 2}, True),
    ({"rank": "2"}, False),                       # type-strict: a string never equals a number
    ({"ok": 1}, False),                           # booleans are not numbers
    ({"rank": {"$gte": 2, "$lt": 3}}, True),
    ({"rank": {"$gt": "1"}}, False),
    ({"tags": "io"}, True),                       # any element of a list
    ({"tags": {"$in": ["x", "prep"]}}, True),
    ({"tags": {"$nin": ["io"]}}, False),
    ({"used.n": {"$lte": 5}}, True),              # dotted paths
    ({"used.missing": None}, True),               # absent equals None
    ({"used.missing": {"$exists": False}}, True),
    ({"used.name": {"$exists": True}}, True),
    ({"activity_id": {"$regex": "^dif"}}, True),
    ({"$or": [{"rank": 0}, {"rank": 2}]}, True),
    ({"$nor": [{"rank": 0}, {"rank": 2}]}, False),
    ({"$and": [{"rank": 2}, {"activity_id": "x"}]}, False),
])
def test_matches(cond, want):
    assert matches(DOC, cond) is want


def test_missing_fails_orderings():
    assert not match_value(MISSING, "$gt", 0) and match_value(MISSING, "$ne", 1)


@pytest.mark.parametrize("bad,msg", [
    ({"rank": {"$near": 1}}, "unknown operator '\\$near'"),
    ({"rank": {"$in": 3}}, "\\$in takes a list"),
    ({"rank": {"$gt": 1, "x": 2}}, "mixed operators and fields"),
    ({"$where": "1"}, "unsupported top-level operator"),
])
def test_bad_filters_say_why(bad, msg):
    with pytest.raises(ValueError, match=msg):
        matches(DOC, bad)


def test_allowed_subset():
    with pytest.raises(ValueError, match="supported: \\$eq"):
        field_ops({"$regex": "a"}, allowed=("$eq",))
