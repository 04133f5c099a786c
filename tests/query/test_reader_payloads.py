"""Readers (read_tasks, query, the archive) decode a payload only when its
flags say msgpack, never raise on one bad payload (counted, raw bytes kept),
and name records whose activity is carried in their payload."""
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs

from flowcept.config import load_config
from flowcept.native.batch import Batch, build_frame
from flowcept.query.search import query
from flowcept.query.tasks import read_records, read_tasks, task_dict
from flowcept.record.layout import FLAG_C_API, FLAG_PAYLOAD_MSGPACK, RECORD_DTYPE
from flowcept.record.payload import ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD
from flowcept.store.lmdb import LmdbStore

OPAQUE = bytes(range(0x90, 0x98))   # 8 raw bytes, as examples/c_tasks.c passes
BAD = b"\xc1\xc1\xc1"               # flagged msgpack, is not
LONG = "overflowed-" + "n" * 300


def _rec(recs, i, tid, act, flags):
    recs[i]["task_id"] = tid
    recs[i]["workflow_id"] = 0x77
    recs[i]["start_ns"] = 1_000 + tid
    recs[i]["end_ns"] = 2_000 + tid
    recs[i]["rank"] = tid % 3
    recs[i]["activity_id"] = act
    recs[i]["flags"] = flags


def prefix(name):
    raw = name.encode()
    return struct.pack("<H", len(raw)) + raw


def frame():
    recs = np.zeros(6, RECORD_DTYPE)
    pays = []
    _rec(recs, 0, 1, 1, FLAG_PAYLOAD_MSGPACK)
    pays.append(msgpack.packb({"used": {"x": 1}, "generated": {"y": 2}}))
    _rec(recs, 1, 2, 2, FLAG_C_API)                                   # C API: opaque
    pays.append(OPAQUE)
    _rec(recs, 2, 3, 1, FLAG_PAYLOAD_MSGPACK)                         # bad msgpack
    pays.append(BAD)
    _rec(recs, 3, 4, ACTIVITY_OVERFLOW, FLAG_PAYLOAD_MSGPACK | FLAG_NAME_IN_PAYLOAD)
    pays.append(prefix(LONG) + msgpack.packb({"used": {"z": 3}}))
    _rec(recs, 4, 5, ACTIVITY_OVERFLOW, FLAG_C_API | FLAG_NAME_IN_PAYLOAD)
    pays.append(prefix("c-overflow") + OPAQUE)
    _rec(recs, 5, 6, 2, FLAG_C_API)                                   # C API, no payload
    pays.append(b"")
    return build_frame(recs, pays, ["host:nodeA", "py_task", "c_task"], job_id=11, ring_uid=3,
                       seq=0)


@pytest.fixture
def store_dir(tmp_path):
    path = str(tmp_path / "store")
    f = frame()
    st = LmdbStore(path, load_config(env={}))
    try:
        st.put_batches([(Batch(f).key, f)])
    finally:
        st.close()
    return path


def by_seq(docs):
    return {int(d["task_id"].split("-")[1], 16): d for d in docs}


def test_read_tasks_decodes_by_flag_and_never_raises(store_dir):
    stats = {}
    docs = by_seq(read_tasks(store_dir, stats=stats))
    assert len(docs) == 6 and stats["payload_errors"] == 1
    assert docs[1]["used"] == {"x": 1} and docs[1]["generated"] == {"y": 2}
    assert docs[2]["payload"] == OPAQUE and isinstance(docs[2]["payload"], bytes)
    assert docs[3]["payload"] == BAD and "payload_error" in docs[3]
    assert docs[4]["activity_id"] == LONG and docs[4]["used"] == {"z": 3}
    assert docs[5]["activity_id"] == "c-overflow" and docs[5]["payload"] == OPAQUE
    assert "payload" not in docs[6] and docs[6]["activity_id"] == "c_task"
    assert docs[1]["hostname"] == "nodeA"


def test_read_records_strips_the_name_prefix(store_dir):
    r = read_records(store_dir)
    order = np.argsort(r.records["task_id"])
    assert [r.activity[i] for i in order] == ["py_task", "c_task", "py_task", LONG, "c-overflow",
                                              "c_task"]
    assert r.payloads[order[4]] == OPAQUE
    assert r.payloads[order[3]] == msgpack.packb({"used": {"z": 3}})
    assert not (r.records["flags"] & FLAG_NAME_IN_PAYLOAD).any()   # prefixes are gone
    assert r.records["activity_id"][order[3]] == ACTIVITY_OVERFLOW


def test_query_decodes_by_flag_counts_errors_and_finds_overflow_names(store_dir):
    stats = {}
    docs = by_seq(query(store_dir, stats=stats))
    assert len(docs) == 6 and stats["payload_errors"] == 1
    assert docs[2]["payload"] == OPAQUE and docs[3]["payload"] == BAD
    got = query(store_dir, activity=LONG)
    assert [d["used"] for d in got] == [{"z": 3}]
    got = query(store_dir, filter={"activity_id": "c-overflow"})
    assert len(got) == 1 and got[0]["payload"] == OPAQUE
    assert query(store_dir, activity="py_task", filter={"used.x": 1})[0]["generated"] == {"y": 2}


def test_archive_reader_decodes_by_flag_and_never_raises(store_dir, tmp_path):
    pytest.importorskip("h5py")
    from flowcept.archive.compact import compact
    from flowcept.archive.hdf5 import Archive
    out = str(tmp_path / "job.h5")
    compact(store_dir, out, progress=False)
    with Archive(out) as a:
        docs = by_seq([a.task(i) for i in range(a.n)])
        assert len(docs) == 6
        assert docs[1]["used"] == {"x": 1}
        assert docs[2]["payload"] == OPAQUE
        assert docs[3]["payload"] == BAD
        assert docs[4]["used"] == {"z": 3} and docs[4]["activity_id"] == LONG
        assert docs[5]["payload"] == OPAQUE and docs[5]["activity_id"] == "c-overflow"
        pays = a.decoded_payloads()
        assert sum(1 for p in pays if p == OPAQUE) == 2 and BAD in pays
        assert a.payload_errors >= 1
        rows = {int(a._column("task_id")[i]): i for i in range(a.n)}
        assert a.payload(rows[2]) == OPAQUE and a.used(rows[2]) == {}


@settings(max_examples=60, deadline=None)
@given(data=hs.binary(max_size=64), flags=hs.sampled_from([0, FLAG_C_API, FLAG_PAYLOAD_MSGPACK,
                                                             FLAG_C_API | FLAG_PAYLOAD_MSGPACK]))
def test_task_dict_never_raises_and_keeps_opaque_bytes(data, flags):
    rec = np.zeros(1, RECORD_DTYPE)[0]
    rec["flags"] = flags
    rec["task_id"] = 1
    stats = {}
    doc = task_dict(rec, "a", "n", data, stats=stats)
    if data and not flags & FLAG_PAYLOAD_MSGPACK:
        assert doc["payload"] == data
    if stats.get("payload_errors"):
        assert doc["payload"] == data and flags & FLAG_PAYLOAD_MSGPACK
