"""Documents as JSON text written in C (flowcept.query.documents.json_text over
flowcept.native.docjson) are exactly the bytes of the Python document path
(documents() then dumps / dumps_python), over generated batches with hostile
payloads: NaN and infinities, integers at the edges of 64 bits, float32,
text with quotes, control characters, astral and line-separator characters,
text that is not UTF-8, binary, numpy summaries, nesting past the C writer's
depth, duplicate and non-text map keys, ext types, truncated and trailing
bytes, opaque C-API payloads, payloads that are not maps, and activity names
carried in payloads (FLAG_NAME_IN_PAYLOAD) -- for whole documents and
projections, in both styles; the same for the payload fields' JSON columns
(Parquet) and for the values lineage links by."""
import json
import math

import msgpack
import numpy as np
import pytest

from flowcept.native import docjson
from flowcept.query.documents import (columns, documents, dumps, dumps_lines, dumps_python, json_lines,
                                      json_text, payload_columns_json)
from flowcept.query.frames import decode_frame
from support.hostile_payloads import FLOATS, hostile_frame

PROJECTIONS = [None, ["task_id", "used"], ["generated", "rank", "hostname", "used", "rank"],
               ["payload", "payload_error", "tags"], ["error", "custom_metadata", "started_at", "ended_at"],
               ["nothing"], ["used.k0", "task_id"]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_documents_text_equals_the_python_path(seed):
    block = decode_frame(hostile_frame(seed))
    rows = np.arange(block.n)
    for fields in PROJECTIONS:
        docs = documents(block, rows, fields)
        assert json_lines(block, rows, fields) == dumps_lines(docs), fields
        want = b"".join(dumps_python(d) + b"," for d in docs)
        assert json_text({0: block}, np.zeros(block.n, np.int64), rows, fields, "python", b",") == want
    # what the C writer left to Python is only the hostile rest: most rows are written in C
    left = _python_rows(block, rows)
    assert 0 < len(left) < block.n * 0.2


def _python_rows(block, rows):
    from flowcept.query.documents import _native_json, _rows_for_c
    native = _native_json()
    r = _rows_for_c(native, {0: block}, np.zeros(len(rows), np.int64), rows, "orjson", True)
    _t, _e, state = native.docs_json(r, None, "orjson", 10)
    return np.flatnonzero(state == native.PYTHON_ROW)


def test_rows_of_several_blocks_in_any_order():
    blocks = {b: decode_frame(hostile_frame(10 + b, named=b % 2 == 0)) for b in range(3)}
    rng = np.random.default_rng(0)
    bid = rng.integers(0, 3, 900)
    row = np.array([rng.integers(0, blocks[b].n) for b in bid.tolist()])
    want = b"".join(dumps(documents(blocks[b], [r])[0]) + b"\n" for b, r in zip(bid.tolist(), row.tolist()))
    assert json_text(blocks, bid, row) == want


def test_page_body_bytes_equal_fastapi_json_response():
    """The service's page body: JSONResponse (json.dumps ensure_ascii=False, compact) of jsonable items."""
    from flowcept.query.documents import jsonable
    block = decode_frame(hostile_frame(4))
    rows = np.arange(block.n)
    docs = documents(block, rows)
    want = json.dumps({"items": [jsonable(d) for d in docs]}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    items = json_text({0: block}, np.zeros(block.n, np.int64), rows, None, "python", b",")
    assert b'{"items":[' + items[:-1] + b"]}" == want


@pytest.mark.parametrize("seed", [5, 6])
def test_payload_json_columns_equal_columns_json(seed):
    block = decode_frame(hostile_frame(seed))
    rows = np.arange(block.n)
    ref = columns(block, rows, "json")
    got = payload_columns_json(block, rows)
    for f in ("used", "generated", "tags", "custom_metadata", "error"):
        assert list(got[f]) == list(ref[f]), f


def test_floats_as_repr_and_as_orjson():
    import orjson
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True)
    values = bits.view(np.float64).tolist() + rng.random(50_000).tolist() + FLOATS + \
        [float(i) for i in range(-300, 300)] + (rng.integers(0, 2**62, 20_000) / 1e9).tolist()
    for v in values:
        assert docjson.json_double(v, "orjson") == orjson.dumps(v), v
        want = repr(v).encode() if math.isfinite(v) else b"null"
        assert docjson.json_double(v, "python") == want, v


def test_lineage_scalars_equal_scalar_values():
    """The keys of C's values are equal exactly where Python's values are equal."""
    from flowcept.query.lineage import scalar_values
    block = decode_frame(hostile_frame(8))
    rows = np.arange(block.n)
    from flowcept.query.documents import _native_json, _rows_for_c
    native = _native_json()
    r = _rows_for_c(native, {0: block}, np.zeros(block.n, np.int64), rows, "orjson", True)
    keys, row_of, kind, left = native.scalars(r)
    docs = documents(block, rows)
    seen = {}
    for i, d in enumerate(docs):
        if i in set(left.tolist()):
            continue
        for w, f in ((0, "used"), (1, "generated")):
            want = scalar_values(d.get(f))
            got = [tuple(k) for k, ro, kd in zip(keys.tolist(), row_of.tolist(), kind.tolist())
                   if ro == i and kd == w]
            assert len(got) == len(want), (i, f, want)
            for k, v in zip(got, want):
                assert native.scalar_key(msgpack.packb(v, use_bin_type=True)) == k
                seen.setdefault(k, set()).add(v if not isinstance(v, float) or not v.is_integer() else int(v))
    # equal keys only for equal values
    for k, vals in seen.items():
        assert len(vals) == 1, vals
    assert native.scalar_key(msgpack.packb(1)) == native.scalar_key(msgpack.packb(1.0))
    assert native.scalar_key(msgpack.packb(2**63)) == native.scalar_key(msgpack.packb(float(2**63)))
    assert native.scalar_key(msgpack.packb(-0.0)) == native.scalar_key(msgpack.packb(0))
    assert native.scalar_key(msgpack.packb("a")) != native.scalar_key(msgpack.packb(b"a", use_bin_type=True))
    assert native.scalar_key(msgpack.packb(True)) is None
    assert native.scalar_key(msgpack.packb(math.nan)) is None
    assert native.scalar_key(msgpack.packb("y" * 100)) != native.scalar_key(msgpack.packb("y" * 99 + "z"))
