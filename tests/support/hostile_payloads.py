"""Batches with hostile payloads, for the tests of the read path's text
outputs: every kind of payload a reader meets (NaN and infinities, integers at
the edges of 64 bits, float32, text with quotes, control, astral and
line-separator characters, text that is not UTF-8, binary, numpy summaries,
deep nesting, duplicate and non-text map keys, ext types, truncated and
trailing bytes, opaque C-API payloads, payloads that are not maps) and
activity names carried in payloads (FLAG_NAME_IN_PAYLOAD)."""
import math
import random
import struct

import msgpack
import numpy as np

from flowcept.native.batch import build_frame
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


def hostile_payloads(rng: random.Random, storable: bool = False):
    """(payload bytes, flags) of every kind a reader meets (``storable``: only those a
    store accepts: each msgpack payload one whole value)."""
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
        (P([1, "two", {"three": 3.0}]), FLAG_PAYLOAD_MSGPACK),                     # not a map
        (P("just text"), FLAG_PAYLOAD_MSGPACK),
        (P(12), FLAG_PAYLOAD_MSGPACK),
        (P({"used": [1, 2]}), FLAG_PAYLOAD_MSGPACK),                                # used not a map
        (P({"used": {f"k{i}": i for i in range(40)}}), FLAG_PAYLOAD_MSGPACK),      # a big map
        (raw_map([(used, raw_map([(P(f"k{i % 30}"), P(i)) for i in range(31)]))]), FLAG_PAYLOAD_MSGPACK),
        (P({"used": {"b": b"\x00\xff" * 10}, "generated": {"big": 2**64 - 1, "neg": -2**63}},
           use_bin_type=True), FLAG_PAYLOAD_MSGPACK),
    ]
    if not storable:
        out += [(P({"used": {"a": 1}})[:-1], FLAG_PAYLOAD_MSGPACK),      # truncated
                (P({"used": {"a": 1}}) + b"\x00", FLAG_PAYLOAD_MSGPACK),   # trailing byte
                (b"\xdc\xff\xff", FLAG_PAYLOAD_MSGPACK),                   # array longer than data
                (raw_map([(used, raw_map([(P("x"), b"\xc1")]))]), FLAG_PAYLOAD_MSGPACK)]   # never used
    return out


def hostile_frame(seed: int, named: bool = True, storable: bool = False, t0: int = None):
    """One batch frame of every hostile payload, in random order (``t0``: start times
    from there, increasing, as a store's summaries expect; else anywhere)."""
    rng = random.Random(seed)
    pays = hostile_payloads(rng, storable)
    rng.shuffle(pays)
    n = len(pays)
    recs = np.zeros(n, RECORD_DTYPE)
    nprng = np.random.default_rng(seed)
    recs["task_id"] = nprng.integers(1, 2**63, n, dtype=np.uint64)
    recs["parent_id"] = np.where(nprng.random(n) < 0.3, 0, nprng.integers(1, 2**63, n, dtype=np.uint64))
    recs["workflow_id"] = nprng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    if t0 is None:
        recs["start_ns"] = nprng.integers(-2**62, 2**62, n)
        recs["start_ns"][:5] = [0, -1, 1, 2**63 - 1, -2**63]
    else:
        recs["start_ns"] = t0 + np.sort(nprng.integers(0, 10**9, n))
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
