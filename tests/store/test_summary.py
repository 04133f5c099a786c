"""The batch summary: the C pass (fc_batch_summarize) gives exactly what the
numpy reference (summarize_columns) gives, for every kind of batch, and
hands the batches it does not cover to it."""
import numpy as np
from hypothesis import given, settings, strategies as st

from flowcept.native.batch import Batch, build_frame
from flowcept.native.ring import name_prefix
from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX, RECORD_DTYPE
from flowcept.record.payload import ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD
from flowcept.store.summary import MAX_WORKFLOWS, summarize, summarize_columns

record = st.fixed_dictionaries({
    "task_id": st.integers(1, (1 << 64) - 1),
    "workflow_id": st.sampled_from([7, 9, 1 << 63]),
    "start_ns": st.integers(-(1 << 62), 1 << 62),
    "dur": st.integers(0, 1 << 40),
    "rank": st.integers(0, (1 << 32) - 1),
    "act": st.integers(0, 5),            # 5: the name is in the payload
    "status": st.sampled_from([0, 1, 2]),
    "workflow": st.booleans(),
})


def _frame(rows, strings):
    recs = np.zeros(len(rows), RECORD_DTYPE)
    payloads = []
    for i, r in enumerate(rows):
        recs[i]["task_id"], recs[i]["workflow_id"] = r["task_id"], r["workflow_id"]
        recs[i]["start_ns"], recs[i]["end_ns"] = r["start_ns"], r["start_ns"] + r["dur"]
        recs[i]["rank"], recs[i]["status"] = r["rank"], r["status"]
        flags, payload = (FLAG_WORKFLOW, b"\x80") if r["workflow"] else (0, b"")
        if r["act"] == 5:
            recs[i]["activity_id"] = ACTIVITY_OVERFLOW
            flags |= FLAG_NAME_IN_PAYLOAD
            payload = bytes(name_prefix(f"long-{r['rank'] % 3}")) + payload
        else:
            recs[i]["activity_id"] = r["act"] % len(strings)
        recs[i]["flags"] = flags
        payloads.append(payload)
    return build_frame(recs, payloads, strings, job_id=1, ring_uid=2, seq=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(record, max_size=40),
       st.sampled_from([[NODE_PREFIX + "n1", "a", "b", "c", "d"], ["a", "b"], ["only"]]))
def test_the_c_summary_is_the_numpy_one(rows, strings):
    b = Batch(_frame(rows, strings))
    assert summarize(b) == summarize_columns(b)


def test_many_workflows_and_unknown_activity_ids_go_to_numpy():
    rows = [dict(task_id=i + 1, workflow_id=i + 1, start_ns=i, dur=1, rank=0, act=1, status=0,
                 workflow=False) for i in range(MAX_WORKFLOWS + 5)]
    b = Batch(_frame(rows, ["x", "y"]))
    s = summarize(b)
    assert s == summarize_columns(b) and len(s["wf"]) == MAX_WORKFLOWS + 5
    frame = bytearray(_frame(rows[:3], ["x", "y"]))
    rec = np.frombuffer(frame, RECORD_DTYPE, count=3, offset=96)
    rec = rec.copy()
    rec[1]["activity_id"] = 40            # beyond the string table: a hostile frame
    frame[96:96 + rec.nbytes] = rec.tobytes()
    b = Batch(bytes(frame), check=False)
    assert summarize(b) == summarize_columns(b)
    assert summarize(b)["act"].count("") == 1
