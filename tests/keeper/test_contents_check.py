"""check_records: for any payload bytes and flags it either accepts or raises
PayloadError, never anything else, and what it accepts every reader reads."""
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs

from flowcept.native.batch import Batch, build_frame
from flowcept.query.tasks import task_dict
from flowcept.record.layout import FLAG_C_API, FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW, RECORD_DTYPE
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD, PayloadError, check_records
from flowcept.store.summary import summarize, workflow_docs

FLAGS = [0, FLAG_C_API, FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW | FLAG_PAYLOAD_MSGPACK,
         FLAG_PAYLOAD_MSGPACK | FLAG_NAME_IN_PAYLOAD, FLAG_C_API | FLAG_NAME_IN_PAYLOAD]

values = hs.recursive(hs.none() | hs.booleans() | hs.integers(-2 ** 63, 2 ** 64 - 1) | hs.floats()
                      | hs.text(max_size=8) | hs.binary(max_size=8),
                      lambda c: hs.lists(c, max_size=3) | hs.dictionaries(
                          hs.text(max_size=4) | hs.integers(-3, 3), c, max_size=3), max_leaves=10)
payloads = hs.one_of(hs.binary(max_size=40), values.map(msgpack.packb),
                     hs.tuples(values.map(msgpack.packb), hs.binary(min_size=1, max_size=4)).map(
                         lambda t: t[0] + t[1]))


def frame_of(items):
    recs = np.zeros(len(items), RECORD_DTYPE)
    pays = []
    for i, (flags, data) in enumerate(items):
        recs[i]["task_id"] = 0 if flags & FLAG_WORKFLOW else i + 1
        recs[i]["workflow_id"] = 1
        recs[i]["activity_id"] = 1
        recs[i]["flags"] = flags
        pays.append(data)
    return build_frame(recs, pays, ["host:n", "a"], job_id=1, ring_uid=1, seq=0)


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.tuples(hs.sampled_from(FLAGS), payloads), min_size=1, max_size=6))
def test_accepts_or_raises_payload_error_and_readers_read_what_it_accepts(items):
    b = Batch(frame_of(items))
    try:
        check_records(b.records, b.payload)
    except PayloadError:
        return
    summarize(b)                      # the store's work on an accepted batch
    docs = dict(workflow_docs(b))
    assert all(isinstance(d, dict) for d in docs.values())
    for i in range(len(b)):
        doc = task_dict(b.records[i], "a", "n", b.payload_of(i), stats={})
        assert doc["task_id"]


def test_zero_length_msgpack_payloads_between_others():
    items = [(FLAG_PAYLOAD_MSGPACK, b""), (FLAG_PAYLOAD_MSGPACK, msgpack.packb({"a": 1})),
             (FLAG_PAYLOAD_MSGPACK, b""), (FLAG_PAYLOAD_MSGPACK, msgpack.packb([1, {"b": 2}]))]
    b = Batch(frame_of(items))
    check_records(b.records, b.payload)


def test_a_value_running_into_the_next_payload_is_refused():
    # a 2-element array holding only one: the next record's bytes would complete it
    items = [(FLAG_PAYLOAD_MSGPACK, b"\x92\x01"), (FLAG_PAYLOAD_MSGPACK, b"\x02")]
    b = Batch(frame_of(items))
    with pytest.raises(PayloadError, match="record 0"):
        check_records(b.records, b.payload)
