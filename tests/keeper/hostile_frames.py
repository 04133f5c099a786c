"""Frames that pass the frame validator (magic, lengths, CRC) but carry
hostile contents, for keeper and store tests."""
import msgpack
import numpy as np

from flowcept.native.batch import Batch, build_frame
from flowcept.record.layout import FLAG_C_API, FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW, RECORD_DTYPE

STRINGS = ["host:n0", "step", "io"]

# payload contents that no reader may decode as what the flags say
NOT_MSGPACK = b"\xc1\x00\x01"                       # 0xc1 is never used by msgpack
HUGE_ARRAY = b"\xdd\xff\xff\xff\xff\x01"            # array32 of 2**32-1 elements, 1 given
HUGE_STR = b"\xdb\x7f\xff\xff\xff" + b"x" * 8        # str32 of 2 GiB, 8 bytes given
HUGE_MAP = b"\xdf\xff\xff\xff\xff\x01\x02"           # map32 of 2**32-1 pairs
TRAILING = msgpack.packb({"a": 1}) + b"\x00"         # two values where one is expected
UNHASHABLE_KEY = b"\x81\x91\x01\x02"                 # {[1]: 2}
BAD_UTF8 = b"\xa2\xff\xfe"                           # str of invalid UTF-8


def deep(depth: int, leaf: bytes = b"\xc0") -> bytes:
    """msgpack of [[[...]]] nested depth deep."""
    return b"\x91" * depth + leaf


def deep_map(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


HOSTILE_WORKFLOW = {
    "not_msgpack": NOT_MSGPACK, "deep_list": deep(5000), "deep_map": deep_map(700),
    "list_not_map": msgpack.packb([1, 2, 3]), "int_not_map": msgpack.packb(7),
    "huge_array": HUGE_ARRAY, "huge_str": HUGE_STR, "huge_map": HUGE_MAP, "trailing": TRAILING,
    "unhashable_key": UNHASHABLE_KEY, "bad_utf8": msgpack.packb({"a": 1})[:1] + b"\xa2\xff\xfe\x01",
}
# task payloads the keeper refuses (not one msgpack value filling the payload)
HOSTILE_TASK = {
    "not_msgpack": NOT_MSGPACK, "deep_list": deep(5000), "truncated": msgpack.packb([1, 2, 3])[:-1],
    "huge_array": HUGE_ARRAY, "huge_str": HUGE_STR, "huge_map": HUGE_MAP, "trailing": TRAILING,
}
# task payloads that are well-formed msgpack but do not decode to Python
# values: stored; the readers keep them raw and count them
READER_ONLY_TASK = {"deep_900": deep(900), "unhashable_key": UNHASHABLE_KEY, "bad_utf8": BAD_UTF8}


def records(n: int, seq: int, *, workflow_id: int = 0xABC, t0: int = 1_700_000_000_000_000_000):
    recs = np.zeros(n, RECORD_DTYPE)
    for i in range(n):
        recs[i]["task_id"] = seq * 1000 + i + 1
        recs[i]["workflow_id"] = workflow_id
        recs[i]["start_ns"] = t0 + seq * 1_000_000 + i * 100
        recs[i]["end_ns"] = recs[i]["start_ns"] + 50
        recs[i]["activity_id"] = 1 + i % 2
        recs[i]["flags"] = FLAG_PAYLOAD_MSGPACK
    return recs


def task_frame(seq: int, n: int = 4, *, ring_uid: int = 1, bad_task: bytes = None,
               workflow: bytes = None, workflow_id: int = 0xABC, opaque: bytes = None,
               job_id: int = 7):
    """A frame of n good tasks plus optionally: one task flagged msgpack with
    payload ``bad_task``, one workflow record with payload ``workflow``, one
    C API task with the opaque payload ``opaque`` (no msgpack flag)."""
    recs = records(n, seq, workflow_id=workflow_id)
    pays = [msgpack.packb({"used": {"i": i, "seq": seq}, "generated": {"y": i * 2}}) for i in range(n)]
    extra = []
    if bad_task is not None:
        extra.append((FLAG_PAYLOAD_MSGPACK, bad_task))
    if opaque is not None:
        extra.append((FLAG_C_API, opaque))
    if workflow is not None:
        extra.append((FLAG_WORKFLOW | FLAG_PAYLOAD_MSGPACK, workflow))
    if extra:
        more = records(len(extra), seq + 500, workflow_id=workflow_id)
        for j, (flags, data) in enumerate(extra):
            more[j]["flags"] = flags
            if flags & FLAG_WORKFLOW:
                more[j]["task_id"] = 0
            pays.append(data)
        recs = np.concatenate([recs, more])
    return build_frame(recs, pays, STRINGS, job_id=job_id, ring_uid=ring_uid, seq=seq)


def key_of(frame: bytes) -> bytes:
    return Batch(frame).key
