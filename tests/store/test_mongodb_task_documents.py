"""The MongoDB store's task documents (built from columns on ingest) are the
readers' documents (task_dict, per record row) plus _id, node and job."""
import msgpack
import numpy as np

from flowcept.native.batch import Batch, build_frame
from flowcept.query.tasks import named_payload, task_dict
from flowcept.record.layout import FLAG_C_API, FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW, RECORD_DTYPE
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD
from flowcept.store.mongodb import task_documents


def prefixed(name: str, rest: bytes) -> bytes:
    raw = name.encode()
    return len(raw).to_bytes(2, "little") + raw + rest


def test_store_documents_are_the_readers_documents():
    items = [(FLAG_PAYLOAD_MSGPACK, msgpack.packb({"used": {"x": 1}, "generated": {"y": 2}}), 1),
             (FLAG_C_API, b"\x00opaque", 2),
             (FLAG_PAYLOAD_MSGPACK, b"\xc1", 1),
             (FLAG_WORKFLOW | FLAG_PAYLOAD_MSGPACK, msgpack.packb({"name": "wf"}), 0),
             (FLAG_PAYLOAD_MSGPACK | FLAG_NAME_IN_PAYLOAD,
              prefixed("a-long-name", msgpack.packb({"used": {"z": 3}})), 1),
             (FLAG_PAYLOAD_MSGPACK, b"", 2)]
    recs = np.zeros(len(items), RECORD_DTYPE)
    for i, (flags, _data, act) in enumerate(items):
        recs[i]["flags"] = flags
        recs[i]["workflow_id"] = 5
        recs[i]["task_id"] = 0 if flags & FLAG_WORKFLOW else i + 1
        recs[i]["parent_id"] = 1 if i == 1 else 0
        recs[i]["activity_id"] = act
        recs[i]["status"] = i % 3
        recs[i]["start_ns"], recs[i]["end_ns"] = 10 * i, 10 * i + 5
        recs[i]["rank"], recs[i]["thread_id"] = i, 100 + i
    strings = ["host:node7", "train", "c_call"]
    b = Batch(build_frame(recs, [d for _f, d, _a in items], strings, job_id=9, ring_uid=2, seq=3))
    docs = task_documents(b.key, b)
    rows = [i for i, (f, _d, _a) in enumerate(items) if not f & FLAG_WORKFLOW]
    assert len(docs) == len(rows)
    for doc, i in zip(docs, rows):
        flags = int(b.records[i]["flags"])
        name, own = named_payload(b.payload_of(i), flags, strings[items[i][2]])
        rec = {k: b.records[i][k] for k in RECORD_DTYPE.names}
        rec["flags"] = flags & ~FLAG_NAME_IN_PAYLOAD
        want = task_dict(rec, name, "node7", own)
        want.update(_id=f"{b.key.hex()}:{i:08d}", node="node7", job=f"{9:016x}")
        assert doc == want
    assert docs[2]["payload_error"] and docs[2]["payload"] == b"\xc1"
    assert docs[3]["activity_id"] == "a-long-name" and docs[3]["used"] == {"z": 3}
