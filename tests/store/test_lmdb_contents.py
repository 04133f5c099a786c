"""LmdbStore.stage: ValueError for contents it cannot store (before writing
anything), StoreError naming the path and the fix for a failing write,
int-keyed workflow documents, name-in-payload records in the summaries."""
import errno
import os
import struct
import sys

import lmdb
import msgpack
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keeper"))

from flowcept.config import load_config  # noqa: E402
from flowcept.errors import StoreError  # noqa: E402
from flowcept.native.batch import build_frame  # noqa: E402
from flowcept.query.tasks import read_workflows  # noqa: E402
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, RECORD_DTYPE  # noqa: E402
from flowcept.record.payload import ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD  # noqa: E402
from flowcept.store.lmdb import LmdbStore  # noqa: E402
from hostile_frames import HOSTILE_WORKFLOW, key_of, task_frame  # noqa: E402


def store(tmp_path, **kw):
    return LmdbStore(str(tmp_path / "store"), load_config(env={}, **kw))


@pytest.mark.parametrize("name", sorted(HOSTILE_WORKFLOW))
def test_stage_refuses_bad_workflow_documents_and_writes_nothing_of_them(tmp_path, name):
    good1, good2 = task_frame(0), task_frame(2)
    bad = task_frame(1, workflow=HOSTILE_WORKFLOW[name])
    st = store(tmp_path)
    try:
        assert st.stage(key_of(good1), good1) == 1
        with pytest.raises(ValueError):
            st.stage(key_of(bad), bad)
        assert st.stage(key_of(good2), good2) == 1   # the transaction is still usable
        st.commit_staged()
        assert {bytes(k) for k, _ in st.scan()} == {key_of(good1), key_of(good2)}
        assert len(list(st.summaries())) == 2 and st.workflows() == {}
        assert not st.has(key_of(bad))
    finally:
        st.close()


def test_put_batches_aborts_all_on_a_bad_entry(tmp_path):
    st = store(tmp_path)
    try:
        with pytest.raises(ValueError):
            st.put_batches([(key_of(f), f) for f in
                            (task_frame(0), task_frame(1, workflow=b"\xc1"), task_frame(2))])
        assert list(st.scan()) == []
    finally:
        st.close()


def test_int_keyed_documents_merge_with_later_ones(tmp_path):
    st = store(tmp_path)
    try:
        f1 = task_frame(0, workflow=msgpack.packb({1: "x", "a": {2: 3}}))
        f2 = task_frame(1, workflow=msgpack.packb({"b": 1, 1: "y"}))
        assert st.put_batches([(key_of(f1), f1)]) == 1
        assert st.put_batches([(key_of(f2), f2)]) == 1
        assert st.workflows() == {0xABC: {1: "y", "a": {2: 3}, "b": 1}}
    finally:
        st.close()
    assert read_workflows(str(tmp_path / "store")) == {f"{0xABC:016x}": {1: "y", "a": {2: 3}, "b": 1}}


def test_a_stored_document_that_does_not_decode_is_replaced_not_fatal(tmp_path):
    st = store(tmp_path)
    try:
        f1 = task_frame(0, workflow=msgpack.packb({"a": 1}))
        st.put_batches([(key_of(f1), f1)])
        env, dbs = st.envs[0]
        with env.begin(write=True) as txn:   # damage it (as an older writer might have)
            txn.put((0xABC).to_bytes(8, "big"), b"\xc1garbage", db=dbs["workflows"])
        assert st.workflows() == {0xABC: {}}
        f2 = task_frame(1, workflow=msgpack.packb({"b": 2}))
        assert st.put_batches([(key_of(f2), f2)]) == 1
        assert st.workflows() == {0xABC: {"b": 2}}
    finally:
        st.close()


def test_map_full_raises_store_error_naming_the_path_and_the_setting(tmp_path):
    st = store(tmp_path, lmdb_map_size=1 << 20)
    try:
        frames = [task_frame(s, n=3000) for s in range(6)]
        with pytest.raises(StoreError) as ei:
            st.put_batches([(key_of(f), f) for f in frames])
        msg = str(ei.value)
        assert str(tmp_path / "store") in msg and "lmdb_map_size" in msg
        assert ei.value.errno == errno.ENOSPC
        assert not isinstance(ei.value, ValueError)
    finally:
        st.close()


def test_disk_errors_name_the_file_system_to_free(tmp_path):
    st = store(tmp_path)
    try:
        e = st._error("commit", lmdb.DiskError("mdb_txn_commit: No space left on device"))
        assert isinstance(e, StoreError) and e.errno == errno.ENOSPC
        assert f"free space on {tmp_path / 'store'}'s file system" in str(e)
        e = st._error("commit", lmdb.Error("mdb_txn_commit: Input/output error"))
        assert e.errno == errno.EIO and "free space" in str(e) and str(tmp_path / "store") in str(e)
        assert "lmdb_map_size" not in str(e)
    finally:
        st.close()


def _overflow_frame(names, seq=0):
    recs = np.zeros(len(names) + 1, RECORD_DTYPE)
    pays = []
    for i, name in enumerate(names):
        recs[i]["task_id"] = i + 1
        recs[i]["workflow_id"] = 5
        recs[i]["start_ns"] = recs[i]["end_ns"] = 1000 + i
        recs[i]["activity_id"] = ACTIVITY_OVERFLOW
        recs[i]["flags"] = FLAG_PAYLOAD_MSGPACK | FLAG_NAME_IN_PAYLOAD
        raw = name.encode()
        pays.append(struct.pack("<H", len(raw)) + raw + msgpack.packb({"used": {"i": i}}))
    recs[-1]["task_id"] = 99
    recs[-1]["workflow_id"] = 5
    recs[-1]["activity_id"] = 1
    recs[-1]["flags"] = FLAG_PAYLOAD_MSGPACK
    pays.append(msgpack.packb({}))
    return build_frame(recs, pays, ["host:n0", "in_table"], job_id=3, ring_uid=9, seq=seq)


def test_summaries_name_overflow_records_from_their_payload(tmp_path):
    f = _overflow_frame(["long-" + "x" * 900, "ünï", "long-" + "x" * 900])
    st = store(tmp_path)
    try:
        assert st.put_batches([(key_of(f), f)]) == 1
        (_k, summary), = list(st.summaries())
        assert sorted(summary["act"]) == sorted(["in_table", "long-" + "x" * 900, "ünï"])
        assert summary["n"] == 4
    finally:
        st.close()
