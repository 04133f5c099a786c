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


# -- the vectorised engine against the per-document evaluator -----------------------------
import numpy as np
from hypothesis import given, settings, strategies as st

from flowcept.query.filters import Columns, mask, matches

_values = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c"]), st.none(), st.booleans())
_docs = st.lists(st.fixed_dictionaries({}, optional={"x": _values, "y": _values,
                                                     "z": st.lists(_values, max_size=3)}),
                 min_size=1, max_size=20)
_ops = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
_leaf = st.builds(lambda f, op, v: {f: {op: v}}, st.sampled_from(["x", "y", "z"]), _ops, _values) | \
    st.builds(lambda f, vs: {f: {"$in": vs}}, st.sampled_from(["x", "y"]), st.lists(_values, max_size=3))
_filters = st.recursive(_leaf, lambda inner: st.builds(
    lambda k, parts: {k: parts}, st.sampled_from(["$and", "$or", "$nor"]),
    st.lists(inner, min_size=1, max_size=3)), max_leaves=6)


class _Docs(Columns):
    """Column x answered vectorised, the rest from documents."""

    def __init__(self, docs, with_documents=True):
        self.docs, self.with_documents = docs, with_documents

    def field_mask(self, field, op, arg, rows):
        if field != "x":
            return None
        return np.array([matches(self.docs[r], {field: {op: arg}}) for r in rows], bool)

    def documents(self, rows):
        return [self.docs[r] for r in rows] if self.with_documents else None


@settings(max_examples=300, deadline=None)
@given(_docs, _filters)
def test_engine_equals_the_document_evaluator(docs, flt):
    got, exact = mask(flt, _Docs(docs), np.arange(len(docs)))
    assert exact
    assert got.tolist() == [matches(d, flt) for d in docs]


@settings(max_examples=300, deadline=None)
@given(_docs, _filters)
def test_a_prefilter_never_loses_a_match(docs, flt):
    got, exact = mask(flt, _Docs(docs, with_documents=False), np.arange(len(docs)))
    want = [matches(d, flt) for d in docs]
    assert all(g or not w for g, w in zip(got.tolist(), want))   # a superset
    if exact:
        assert got.tolist() == want
