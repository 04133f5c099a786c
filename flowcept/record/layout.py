"""The record and batch layouts as numpy dtypes.

The definition is csrc/flowcept.h; these dtypes mirror it and are checked
against the compiled extension (fc_layout_describe) when it is loaded, so a
drift between C and Python fails loudly instead of corrupting data.  This
module imports only numpy, so offline readers can use it without the
extension.
"""
from __future__ import annotations

import numpy as np

ABI_VERSION = 1
FORMAT_VERSION = 1

BATCH_MAGIC = 0x3148544142434647  # bytes "GFCBATH1"
BATCH_HEADER_SIZE = 96

STATUS_FINISHED = 0
STATUS_ERROR = 1
STATUS_RUNNING = 2
STATUS_NAMES = {STATUS_FINISHED: "FINISHED", STATUS_ERROR: "ERROR", STATUS_RUNNING: "RUNNING"}

FLAG_PAYLOAD_MSGPACK = 1
FLAG_FROM_SPOOL = 2
FLAG_C_API = 4
FLAG_WORKFLOW = 8

# String 0 of every ring's table names its node ("host:<name>"), so that a
# batch says where it ran without a field per record.
NODE_PREFIX = "host:"

RECORD_DTYPE = np.dtype([
    ("task_id", "<u8"),
    ("parent_id", "<u8"),
    ("workflow_id", "<u8"),
    ("start_ns", "<i8"),
    ("end_ns", "<i8"),
    ("rank", "<u4"),
    ("thread_id", "<u4"),
    ("activity_id", "<u4"),
    ("payload_len", "<u4"),
    ("payload_off", "<u4"),
    ("status", "<u2"),
    ("flags", "<u2"),
])
assert RECORD_DTYPE.itemsize == 64

BATCH_HEADER_DTYPE = np.dtype([
    ("magic", "<u8"),
    ("version", "<u2"),
    ("header_size", "<u2"),
    ("flags", "<u4"),
    ("job_id", "<u8"),
    ("ring_uid", "<u8"),
    ("seq", "<u8"),
    ("total_len", "<u8"),
    ("record_count", "<u4"),
    ("string_count", "<u4"),
    ("records_off", "<u8"),
    ("payload_off", "<u8"),
    ("payload_bytes", "<u8"),
    ("strings_off", "<u8"),
    ("rank", "<u4"),
    ("crc32c", "<u4"),
])
assert BATCH_HEADER_DTYPE.itemsize == BATCH_HEADER_SIZE


def check_against(native_fields, record_size: int, header_size: int) -> None:
    """Raises ImportError unless the C layout equals RECORD_DTYPE."""
    mine = [(name, RECORD_DTYPE.fields[name][0].kind, RECORD_DTYPE.fields[name][0].itemsize,
             RECORD_DTYPE.fields[name][1]) for name in RECORD_DTYPE.names]
    if native_fields != mine or record_size != RECORD_DTYPE.itemsize or header_size != BATCH_HEADER_SIZE:
        raise ImportError(
            "flowcept record layout of the compiled extension differs from flowcept/record/layout.py:\n"
            f"  C:      {native_fields} (record {record_size} B, header {header_size} B)\n"
            f"  Python: {mine}\nrebuild the extension (`pip install .`) or fix layout.py")


def split_task_id(task_id: int):
    """(origin, made_in_c, sequence) of a task id."""
    return task_id >> 40, bool(task_id >> 39 & 1), task_id & ((1 << 39) - 1)


def format_task_id(workflow_id: int, task_id: int) -> str:
    """The globally unique string form of a task id: '<workflow>-<task>' in hex."""
    return f"{workflow_id:016x}-{task_id:016x}"


def parse_task_id(text: str):
    """Inverse of format_task_id: (workflow_id, task_id)."""
    wf, _, tid = text.partition("-")
    try:
        return int(wf, 16), int(tid, 16)
    except ValueError:
        raise ValueError(f"not a flowcept task id: {text!r} (expected '<16 hex>-<16 hex>')") from None


def node_of(strings) -> str:
    """The node name a ring's (and so a batch's) string table starts with ("" if none)."""
    if strings and strings[0].startswith(NODE_PREFIX):
        return strings[0][len(NODE_PREFIX):]
    return ""
