"""Batch frames on the Python side: validate, view with numpy, build.

A frame is made in C (fc_ring_pack) and validated in C
(fc_batch_validate); here it is viewed without copying: ``records`` is a
numpy structured array over the frame's record area.
"""
from __future__ import annotations

import errno
import struct
from typing import List, Optional, Sequence

import numpy as np

from flowcept.record.layout import (BATCH_HEADER_DTYPE, BATCH_HEADER_SIZE, BATCH_MAGIC,
                             FORMAT_VERSION, RECORD_DTYPE)

# What the C validator's errno means: (short name, for counters and the
# quarantine; text, for people).
FRAME_ERRORS = {
    errno.EBADMSG: ("bad_magic_or_sizes", "bad magic or inconsistent sizes/offsets"),
    errno.EPROTO: ("bad_version", "unsupported format version"),
    errno.EILSEQ: ("bad_checksum", "checksum mismatch"),
    errno.EMSGSIZE: ("bad_length", "length differs from the header (truncated or trailing bytes)"),
    errno.ERANGE: ("bad_record_range", "a record's payload or activity id is out of range"),
}


class BatchError(ValueError):
    """A frame failed validation; ``code`` is the errno, ``reason`` says why
    and ``name`` names it in a word (``bad_checksum``)."""

    def __init__(self, code: int, detail: str = ""):
        self.code = code
        self.name, self.reason = FRAME_ERRORS.get(code, (f"bad_frame_{code}", f"error {code}"))
        super().__init__(self.reason + (f" ({detail})" if detail else ""))


def batch_key(job_id: int, ring_uid: int, seq: int) -> bytes:
    """The 24-byte batch id (job, ring, ring position), big-endian so that
    LMDB keeps a ring's batches in order."""
    return struct.pack(">QQQ", job_id, ring_uid, seq)


def unpack_batch_key(key: bytes):
    return struct.unpack(">QQQ", bytes(key))


def validate(frame) -> None:
    """Raises BatchError unless the frame is complete and intact (C validator)."""
    from flowcept.native import ffi, lib
    buf = ffi.from_buffer(frame)
    rc = lib.fc_batch_validate(buf, len(buf))
    if rc < 0:
        raise BatchError(-rc, f"{len(buf)} bytes")


class Batch:
    """A validated frame, viewed in place."""

    __slots__ = ("frame", "header", "records", "payload", "_strings")

    def __init__(self, frame, check: bool = True):
        if check:
            validate(frame)
        mv = memoryview(frame).cast("B")
        if len(mv) < BATCH_HEADER_SIZE:
            raise BatchError(errno.EMSGSIZE, f"{len(mv)} bytes")
        self.frame = mv
        self.header = np.frombuffer(mv, BATCH_HEADER_DTYPE, count=1)[0]
        if int(self.header["magic"]) != BATCH_MAGIC:
            raise BatchError(errno.EBADMSG, "magic")
        n = int(self.header["record_count"])
        roff = int(self.header["records_off"])
        self.records = np.frombuffer(mv, RECORD_DTYPE, count=n, offset=roff)
        poff = int(self.header["payload_off"])
        self.payload = mv[poff:poff + int(self.header["payload_bytes"])]
        self._strings: Optional[List[str]] = None

    @property
    def key(self) -> bytes:
        h = self.header
        return batch_key(int(h["job_id"]), int(h["ring_uid"]), int(h["seq"]))

    @property
    def strings(self) -> List[str]:
        if self._strings is None:
            h = self.header
            count, off = int(h["string_count"]), int(h["strings_off"])
            lens = np.frombuffer(self.frame, "<u4", count=count, offset=off)
            pos = off + 4 * count
            out = []
            for length in lens.tolist():
                out.append(bytes(self.frame[pos:pos + length]).decode("utf-8", "replace"))
                pos += length
            self._strings = out
        return self._strings

    def payload_of(self, i: int) -> bytes:
        r = self.records[i]
        off, n = int(r["payload_off"]), int(r["payload_len"])
        return bytes(self.payload[off:off + n])

    def __len__(self) -> int:
        return len(self.records)


def build_frame(records: np.ndarray, payloads: Sequence[bytes], strings: Sequence[str], *,
                job_id: int, ring_uid: int, seq: int, rank: int = 0, flags: int = 0) -> bytes:
    """Builds a frame in Python (tests, tools, fuzzing seeds); the hot path packs in C."""
    from flowcept.native import ffi, lib
    recs = np.array(records, dtype=RECORD_DTYPE, copy=True)
    if len(payloads) != len(recs):
        raise ValueError("one payload per record")
    pay = bytearray()
    for i, p in enumerate(payloads):
        recs[i]["payload_off"] = len(pay)
        recs[i]["payload_len"] = len(p)
        pay += p
        pay += b"\0" * (-len(pay) % 8)
    enc = [s.encode() for s in strings]
    table = struct.pack(f"<{len(enc)}I", *map(len, enc)) + b"".join(enc)
    table += b"\0" * (-(len(table)) % 8)
    records_off = BATCH_HEADER_SIZE
    payload_off = records_off + recs.nbytes
    strings_off = payload_off + len(pay)
    total = strings_off + len(table)
    hdr = np.zeros(1, BATCH_HEADER_DTYPE)
    hdr[0] = (BATCH_MAGIC, FORMAT_VERSION, BATCH_HEADER_SIZE, flags, job_id, ring_uid, seq, total,
              len(recs), len(enc), records_off, payload_off, len(pay), strings_off, rank, 0)
    body = recs.tobytes() + bytes(pay) + table
    crc = lib.fc_crc32c(lib.fc_crc32c(0, ffi.from_buffer(body), len(body)),
                        ffi.from_buffer(hdr.tobytes()), BATCH_HEADER_SIZE)
    hdr[0]["crc32c"] = crc
    return hdr.tobytes() + body
