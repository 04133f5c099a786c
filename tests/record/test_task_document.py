"""The one task-document builder: fields, payload kinds, and that it never
raises on a payload."""
import ast
import pathlib

import msgpack
from hypothesis import given, settings, strategies as hs

import flowcept.record.document as document
from flowcept.record.document import PAYLOAD_ERROR, task_document
from flowcept.record.layout import FLAG_C_API, FLAG_PAYLOAD_MSGPACK, STATUS_ERROR


def doc_of(payload, flags, **over):
    fields = dict(workflow_id=0xab, task_id=2, parent_id=1, status=STATUS_ERROR,
                  start_ns=1_500_000_000, end_ns=2_000_000_000, rank=3, thread_id=7,
                  activity="train", hostname="n1", payload=payload, flags=flags)
    fields.update(over)
    return task_document(**fields)


def test_fields_of_a_task():
    body = {"used": {"x": 1}, "generated": {"y": 2}, "tags": ["t"], "custom_metadata": {"m": 0},
            "error": "boom", "other": 5}
    doc = doc_of(msgpack.packb(body), FLAG_PAYLOAD_MSGPACK)
    assert doc == {
        "task_id": f"{0xab:016x}-{2:016x}", "workflow_id": f"{0xab:016x}",
        "parent_task_id": f"{0xab:016x}-{1:016x}", "activity_id": "train", "status": "ERROR",
        "started_at": 1.5, "ended_at": 2.0, "start_ns": 1_500_000_000, "end_ns": 2_000_000_000,
        "rank": 3, "thread_id": 7, "hostname": "n1",
        "used": {"x": 1}, "generated": {"y": 2}, "tags": ["t"], "custom_metadata": {"m": 0},
        "error": "boom"}


def test_no_parent_unknown_status_and_empty_payload():
    doc = doc_of(b"", FLAG_PAYLOAD_MSGPACK, parent_id=0, status=99)
    assert doc["parent_task_id"] is None and doc["status"] == "99"
    assert "payload" not in doc and "used" not in doc


def test_opaque_and_non_map_payloads_are_kept():
    assert doc_of(b"\x01\x02", FLAG_C_API)["payload"] == b"\x01\x02"
    assert doc_of(msgpack.packb([1, 2]), FLAG_PAYLOAD_MSGPACK)["payload"] == [1, 2]


def test_a_payload_that_does_not_decode_is_kept_raw_and_counted():
    stats = {}
    doc = doc_of(b"\xc1", FLAG_PAYLOAD_MSGPACK, stats=stats)
    assert doc["payload"] == b"\xc1" and doc["payload_error"] == PAYLOAD_ERROR
    assert stats == {"payload_errors": 1}
    doc_of(b"\xc1", FLAG_PAYLOAD_MSGPACK, stats=stats)
    assert stats == {"payload_errors": 2}


@settings(max_examples=200, deadline=None)
@given(data=hs.binary(max_size=48), flags=hs.sampled_from([0, FLAG_C_API, FLAG_PAYLOAD_MSGPACK]))
def test_never_raises_on_a_payload(data, flags):
    stats = {}
    doc = doc_of(data, flags, stats=stats)
    assert doc["task_id"] and ("payload_error" in doc) == bool(stats.get("payload_errors"))


def test_imports_nothing_above_the_record_layer():
    tree = ast.parse(pathlib.Path(document.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    flowcept = [n for n in names if n.startswith("flowcept")]
    assert flowcept and all(n.startswith("flowcept.record.") for n in flowcept), flowcept
