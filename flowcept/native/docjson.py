"""Task documents as JSON in C (csrc/fc_docjson.h): the calls, on rows given
as numpy columns.  What the documents are, which fields, in which order and
with which text, is decided by ``flowcept.query.documents`` (the Python
reference); this module only hands the columns to C and brings back the
bytes, with the rows C left to Python (``state == PYTHON_ROW``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from flowcept.native import ffi, lib
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK

STYLES = {"orjson": lib.FC_JSON_ORJSON, "python": lib.FC_JSON_PYTHON}
DONE, ABSENT, PYTHON_ROW = lib.FC_ROW_DONE, lib.FC_ROW_ABSENT, lib.FC_ROW_PYTHON
FIELD_CODES = {
    "task_id": lib.FC_DOC_TASK_ID, "workflow_id": lib.FC_DOC_WORKFLOW_ID,
    "parent_task_id": lib.FC_DOC_PARENT_TASK_ID, "activity_id": lib.FC_DOC_ACTIVITY_ID,
    "status": lib.FC_DOC_STATUS, "started_at": lib.FC_DOC_STARTED_AT, "ended_at": lib.FC_DOC_ENDED_AT,
    "start_ns": lib.FC_DOC_START_NS, "end_ns": lib.FC_DOC_END_NS, "rank": lib.FC_DOC_RANK,
    "thread_id": lib.FC_DOC_THREAD_ID, "hostname": lib.FC_DOC_HOSTNAME, "used": lib.FC_DOC_USED,
    "generated": lib.FC_DOC_GENERATED, "tags": lib.FC_DOC_TAGS,
    "custom_metadata": lib.FC_DOC_CUSTOM_METADATA, "error": lib.FC_DOC_ERROR,
    "payload": lib.FC_DOC_PAYLOAD, "payload_error": lib.FC_DOC_PAYLOAD_ERROR}

_COLUMNS = (("workflow_id", np.uint64, "const uint64_t *"), ("task_id", np.uint64, "const uint64_t *"),
            ("parent_id", np.uint64, "const uint64_t *"), ("start_ns", np.int64, "const int64_t *"),
            ("end_ns", np.int64, "const int64_t *"), ("rank", np.uint32, "const uint32_t *"),
            ("thread_id", np.uint32, "const uint32_t *"), ("activity", np.uint32, "const uint32_t *"),
            ("status", np.uint32, "const uint32_t *"), ("hostname", np.uint32, "const uint32_t *"),
            ("flags", np.uint16, "const uint16_t *"), ("payload", np.uint64, "const uint64_t *"),
            ("payload_len", np.uint32, "const uint32_t *"))


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class Rows:
    """Rows for the C writers: the columns named in ``_COLUMNS`` (activity,
    status and hostname as indexes into the literals; payload as addresses),
    and the literals (JSON texts; an empty one marks a text the rows using it
    leave to Python).  Holds its arrays and ``keep`` (the payload buffers the
    addresses point into) for as long as it lives."""

    def __init__(self, cols: dict, literals: Sequence[bytes], keep=()):
        self.n = len(cols["task_id"])
        self.keep = list(keep)
        self.cols = {name: np.ascontiguousarray(cols[name], dt) for name, dt, _c in _COLUMNS}
        text = b"".join(literals)
        self.lit_text = np.frombuffer(text or b"\0", np.uint8)
        off = np.zeros(len(literals) + 1, np.uint64)
        np.cumsum([len(x) for x in literals], out=off[1:])
        self.lit_off = off
        c = self.c = ffi.new("fc_doc_rows *")
        c.n = self.n
        for name, _dt, ctype in _COLUMNS:
            setattr(c, name, ffi.cast(ctype, _addr(self.cols[name])))
        c.lit_text = ffi.cast("const char *", _addr(self.lit_text))
        c.lit_off = ffi.cast("const uint64_t *", _addr(self.lit_off))
        c.nlits = len(literals)
        c.msgpack_flag = FLAG_PAYLOAD_MSGPACK

    def bound(self) -> int:
        """Bytes that surely hold every row's document."""
        lens = np.diff(self.lit_off)
        extra = int(lens.max()) * 3 if len(lens) else 0
        return int(self.cols["payload_len"].astype(np.int64).sum()) * 8 + self.n * (660 + extra) + 64


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise ValueError(f"{what}: invalid arguments ({rc})")
    return rc


def docs_json(rows: Rows, fields: Optional[Sequence[int]], style: str, sep: Optional[int]
              ) -> Tuple[bytes, np.ndarray, np.ndarray]:
    """(text, ends, state): the documents of the rows, each followed by the
    byte ``sep``; row i's text ends at ends[i]; rows whose state is
    PYTHON_ROW have no text (the Python reference writes them)."""
    n = rows.n
    ends = np.zeros(n, np.uint64)
    state = np.zeros(n, np.uint8)
    if not n:
        return b"", ends, state
    out = np.empty(rows.bound(), np.uint8)
    codes = np.asarray(list(fields) if fields is not None else [], np.uint8)
    got = _check(lib.fc_docs_json(
        rows.c, 0, ffi.cast("const uint8_t *", _addr(codes)) if len(codes) else ffi.NULL, len(codes),
        STYLES[style], -1 if sep is None else sep, ffi.cast("char *", _addr(out)), len(out),
        ffi.cast("uint64_t *", _addr(ends)), ffi.cast("uint8_t *", _addr(state))), "fc_docs_json")
    if got != n:   # pragma: no cover - the bound holds every row
        raise RuntimeError(f"fc_docs_json wrote {got} of {n} rows")
    return out[:int(ends[-1])].tobytes(), ends, state


def value_json(rows: Rows, field: int, style: str) -> Tuple[bytes, np.ndarray, np.ndarray]:
    """(text, ends, state) of one payload field's value of each row (state
    ABSENT where a row has none, PYTHON_ROW where the reference decides)."""
    n = rows.n
    ends = np.zeros(n, np.uint64)
    state = np.zeros(n, np.uint8)
    if not n:
        return b"", ends, state
    cap = int(rows.cols["payload_len"].astype(np.int64).sum()) * 8 + 64 * n + 64
    out = np.empty(cap, np.uint8)
    got = _check(lib.fc_docs_value_json(
        rows.c, 0, field, STYLES[style], ffi.cast("char *", _addr(out)), cap,
        ffi.cast("uint64_t *", _addr(ends)), ffi.cast("uint8_t *", _addr(state))), "fc_docs_value_json")
    if got != n:   # pragma: no cover
        raise RuntimeError(f"fc_docs_value_json wrote {got} of {n} rows")
    return out[:int(ends[-1])].tobytes(), ends, state


def scalars(rows: Rows) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys (m, 2) uint64, row of each, kind of each (0 used, 1 generated),
    rows left to Python) of the values lineage links by."""
    n = rows.n
    cap = int(rows.cols["payload_len"].astype(np.int64).sum()) + 1
    keys = np.empty((cap, 2), np.uint64)
    row_of = np.empty(cap, np.uint64)
    kind = np.empty(cap, np.uint8)
    state = np.zeros(n, np.uint8)
    count = ffi.new("uint64_t *")
    if n:
        got = lib.fc_doc_scalars(rows.c, 0, ffi.cast("uint64_t *", _addr(keys)),
                                 ffi.cast("uint64_t *", _addr(row_of)), ffi.cast("uint8_t *", _addr(kind)),
                                 cap, count, ffi.cast("uint8_t *", _addr(state)))
        if got != n:   # pragma: no cover
            raise RuntimeError(f"fc_doc_scalars handled {got} of {n} rows")
    m = int(count[0])
    return keys[:m], row_of[:m].astype(np.int64), kind[:m], np.flatnonzero(state == PYTHON_ROW)


def scalar_key(data: bytes) -> Optional[Tuple[int, int]]:
    """The key of one msgpack scalar (None when it does not take part)."""
    key = ffi.new("uint64_t[2]")
    rc = lib.fc_scalar_key(ffi.from_buffer(data), len(data), key)
    if rc < 0:
        raise ValueError("not one msgpack value")
    return (int(key[0]), int(key[1])) if rc == 1 else None


def json_double(v: float, style: str) -> bytes:
    buf = ffi.new("char[40]")
    return ffi.unpack(buf, lib.fc_json_double(v, STYLES[style], buf))
