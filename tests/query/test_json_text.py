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
import random
import struct

import msgpack
import numpy as np
import pytest

from flowcept.native import docjson
from flowcept.native.batch import build_frame
from flowcept.query.documents import (columns, documents, dumps, dumps_lines, dumps_python, json_lines,
                                      json_text, payload_columns_json)
from flowcept.query.frames import decode_frame
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, RECORD_DTYPE
from flowcept.record.payload import ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD

FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1 / 3, 1e16, 1e15, 1e-5, 1e-7, 2.5e-5, 5e-324, 2.2250738585072014e-308,
          1.7976931348623157e308, math.nan, math.inf, -math.inf, 123456789.125, 1795838200.000001]
INTS = [0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**31, -2**31, 2**32, 2**53 + 1,
        2**63 - 1, 2**63, 2**64 - 1, -2**63]
TEXTS = ["", "a", 'quo"te', "back\\slash", "new\nline\r\t\b\f", "\x00\x01\x1f\x7f", "é", "𝄞 astral",
         "\u2028\u2029", "</script>", "x" * 300, "日本語のテキスト"]


def rand_value(rng: random.Random, depth: int = 0):
    k = rng.random()
    if depth > 4 or k < 0.5:
        kind = rng.randrange(7)
        if kind == 0:
            return rng.choice(INTS)
        if kind == 1:
            return rng.choice(FLOATS) if rng.random() < 0.5 else struct.unpack(
                "<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if kind == 2:
            return rng.choice(TEXTS)
        if kind == 3:
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(20)))
        if kind == 4:
            return rng.choice([True, False, None])
        if kind == 5:
            return {"__ndarray__": True, "dtype": "float32", "shape": [3, 4], "min": -1.5, "max": 2.25,
                    "mean": rng.random()}
        return rng.randrange(-10**6, 10**6)
    if k < 0.75:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(TEXTS[:9]) + str(i): rand_value(rng, depth + 1) for i in range(rng.randrange(5))}


def nested(depth: int):
    v = {"leaf": 1}
    for _ in range(depth):
        v = [v]
    return v


def raw_map(pairs):
    """A msgpack map of already-encoded (key, value) byte pairs."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(k + v for k, v in pairs)


P = msgpack.packb


def hostile_payloads(rng: random.Random):
    """(payload bytes, flags) of every kind a reader meets."""
    out = []
    for _ in range(400):
        doc = {}
        for f in ("used", "generated", "tags", "custom_metadata", "error", "other"):
            if rng.random() < 0.6:
                doc[f] = rand_value(rng) if f != "used" else {
                    f"k{i}": rand_value(rng) for i in range(rng.randrange(6))}
        out.append((P(doc, use_bin_type=True), FLAG_PAYLOAD_MSGPACK))
    used = P("used")
    out += [
        (b"", FLAG_PAYLOAD_MSGPACK),
        (b"", 0),
        (b"\x01\x02\xff opaque C bytes", 0),
        (P({"used": {"x": float("nan"), "y": math.inf}}), FLAG_PAYLOAD_MSGPACK),
        (P({"used": nested(70)}), FLAG_PAYLOAD_MSGPACK),          # past the C writer's depth
        (P({"used": nested(60)}), FLAG_PAYLOAD_MSGPACK),
        (P({"used": nested(600)}), FLAG_PAYLOAD_MSGPACK),         # past the readers' depth
        (raw_map([(used, P({"a": 1})), (used, P({"b": 2}))]), FLAG_PAYLOAD_MSGPACK),   # duplicate key
        (raw_map([(used, raw_map([(P("a"), P(1)), (P("a"), P(2))]))]), FLAG_PAYLOAD_MSGPACK),
        (raw_map([(used, P({1: "int key", 2.5: "float key"}, strict_types=False))]), FLAG_PAYLOAD_MSGPACK),
        (raw_map([(P(7), P(8)), (used, P({"a": 1}))]), FLAG_PAYLOAD_MSGPACK),   # int key at the top
        (raw_map([(used, raw_map([(b"\xc4\x01k", P(1))]))]), FLAG_PAYLOAD_MSGPACK),   # bin key
        (raw_map([(used, raw_map([(b"\x92\x01\x02", P(1))]))]), FLAG_PAYLOAD_MSGPACK),   # array key
        (raw_map([(used, raw_map([(P("s"), b"\xa2\xff\xfe")]))]), FLAG_PAYLOAD_MSGPACK),   # not UTF-8
        (raw_map([(used, raw_map([(P("s"), b"\xa3\xed\xa0\x80")]))]), FLAG_PAYLOAD_MSGPACK),   # surrogate
        (raw_map([(used, raw_map([(P("s"), b"\xa2\xc0\xaf")]))]), FLAG_PAYLOAD_MSGPACK),   # overlong
        (raw_map([(used, raw_map([(b"\xa2\xff\xfe", P(1))]))]), FLAG_PAYLOAD_MSGPACK),   # key not UTF-8
        (raw_map([(used, raw_map([(P("e"), b"\xd4\x01\x02")]))]), FLAG_PAYLOAD_MSGPACK),   # fixext
        (raw_map([(used, raw_map([(P("t"), b"\xd6\xff\x00\x00\x00\x01")]))]), FLAG_PAYLOAD_MSGPACK),   # timestamp
        (raw_map([(used, raw_map([(P("f"), b"\xca\x3f\x80\x00\x01")]))]), FLAG_PAYLOAD_MSGPACK),   # float32
        (raw_map([(used, raw_map([(P("f"), b"\xca\x7f\xc0\x00\x00")]))]), FLAG_PAYLOAD_MSGPACK),   # float32 NaN
        (raw_map([(used, raw_map([(P("n"), b"\xcf" + (5).to_bytes(8, "big"))]))]), FLAG_PAYLOAD_MSGPACK),
        (raw_map([(used, raw_map([(P("n"), b"\xd0\x05")]))]), FLAG_PAYLOAD_MSGPACK),   # int8 positive
        (raw_map([(used, raw_map([(P("s"), b"\xd9\x01z")]))]), FLAG_PAYLOAD_MSGPACK),   # str8 of one byte
        (raw_map([(used, raw_map([(P("x"), b"\xc1")]))]), FLAG_PAYLOAD_MSGPACK),   # never used
        (P({"used": {"a": 1}})[:-1], FLAG_PAYLOAD_MSGPACK),                        # truncated
        (P({"used": {"a": 1}}) + b"\x00", FLAG_PAYLOAD_MSGPACK),                   # trailing byte
        (b"\xdc\xff\xff", FLAG_PAYLOAD_MSGPACK),                                   # array longer than data
        (P([1, "two", {"three": 3.0}]), FLAG_PAYLOAD_MSGPACK),                     # not a map
        (P("just text"), FLAG_PAYLOAD_MSGPACK),
        (P(12), FLAG_PAYLOAD_MSGPACK),
        (P({"used": [1, 2]}), FLAG_PAYLOAD_MSGPACK),                                # used not a map
        (P({"used": {f"k{i}": i for i in range(40)}}), FLAG_PAYLOAD_MSGPACK),      # a big map
        (raw_map([(used, raw_map([(P(f"k{i % 30}"), P(i)) for i in range(31)]))]), FLAG_PAYLOAD_MSGPACK),
        (P({"used": {"b": b"\x00\xff" * 10}, "generated": {"big": 2**64 - 1, "neg": -2**63}},
           use_bin_type=True), FLAG_PAYLOAD_MSGPACK),
    ]
    return out


def hostile_frame(seed: int, named: bool = True):
    rng = random.Random(seed)
    pays = hostile_payloads(rng)
    rng.shuffle(pays)
    n = len(pays)
    recs = np.zeros(n, RECORD_DTYPE)
    nprng = np.random.default_rng(seed)
    recs["task_id"] = nprng.integers(1, 2**63, n, dtype=np.uint64)
    recs["parent_id"] = np.where(nprng.random(n) < 0.3, 0, nprng.integers(1, 2**63, n, dtype=np.uint64))
    recs["workflow_id"] = nprng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    recs["start_ns"] = nprng.integers(-2**62, 2**62, n)
    recs["start_ns"][:5] = [0, -1, 1, 2**63 - 1, -2**63]
    recs["end_ns"] = recs["start_ns"] // 2 + nprng.integers(0, 10**9, n)
    recs["rank"] = nprng.integers(0, 2**32 - 1, n, dtype=np.uint32, endpoint=True)
    recs["thread_id"] = nprng.integers(0, 2**32 - 1, n, dtype=np.uint32, endpoint=True)
    recs["status"] = nprng.integers(0, 5, n)
    recs["activity_id"] = nprng.integers(1, 8, n)      # some past the table: the last name
    strings = ["host:nodé-\"1\"", "train", "é\n\"q\"", "\x01ctl", "𝄞", "a" * 200]
    payloads, flags = [], []
    for i, (p, fl) in enumerate(pays):
        if named and i % 9 == 4:   # the name rides in front of the payload
            name = ["overflow-é", "x\"y", "\u2028"][i % 3].encode()
            p = len(name).to_bytes(2, "little") + name + p
            fl |= FLAG_NAME_IN_PAYLOAD
            recs["activity_id"][i] = ACTIVITY_OVERFLOW
        payloads.append(p)
        flags.append(fl)
    recs["flags"] = flags
    return build_frame(recs, payloads, strings, job_id=1, ring_uid=2, seq=seed)


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
