"""The quarantine: rejected batches, kept with their reason for inspection.

An LMDB environment ``<store_dir>/quarantine/`` (0700/0600), one database:
key = time_ns (8 B big-endian) + a per-process counter (4 B) + pid (4 B);
value = msgpack {reason, detail, time_ns, routing (stream id, key, job,
node, source), size, frame (the raw bytes; only the first
``keep_bytes`` of a larger frame)}.  Committed before the keeper
acknowledges the entry.
"""
from __future__ import annotations

import errno
import itertools
import os
import struct
import time
from typing import Iterator, List

import lmdb
import msgpack

KEEP_BYTES = 1 << 20


def _text(v) -> str:
    """Any value as valid UTF-8 text (quarantine records must always pack)."""
    try:
        t = v if isinstance(v, str) else str(v)
    except Exception:
        t = f"<{type(v).__name__}>"
    return t.encode("utf-8", "backslashreplace").decode("utf-8")


def _routing(r) -> dict:
    if not isinstance(r, dict):
        return {}
    return {_text(k): (v if v is None or isinstance(v, (int, float, bool)) else _text(v))
            for k, v in r.items()}


class Quarantine:
    def __init__(self, store_dir: str, readonly: bool = False, keep_bytes: int = KEEP_BYTES):
        self.path = os.path.join(store_dir, "quarantine")
        self.keep_bytes = keep_bytes
        if not readonly:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        elif not os.path.isdir(self.path):
            self.env = None
            return
        self.env = lmdb.open(self.path, map_size=1 << 34, max_dbs=2, readonly=readonly,
                             sync=False, metasync=False, mode=0o600, readahead=False)
        self.db = self.env.open_db(b"rejected", create=not readonly)
        self._counter = itertools.count()

    def put(self, items: List[dict]) -> None:
        """items: {reason, detail, routing, frame}; one committed transaction."""
        if not items:
            return
        try:
            self._put(items)
        except lmdb.Error as e:
            from flowcept.errors import StoreError
            raise StoreError(errno.ENOSPC if isinstance(e, (lmdb.MapFullError, lmdb.DiskError))
                             else errno.EIO,
                             f"quarantine {self.path}: cannot commit ({type(e).__name__}: {e}); "
                             f"free space on {self.path}'s file system") from None

    def _put(self, items: List[dict]) -> None:
        with self.env.begin(write=True) as txn:
            for it in items:
                now = time.time_ns()
                key = struct.pack(">QII", now, next(self._counter) & 0xFFFFFFFF, os.getpid())
                frame = it.get("frame") or b""
                if not isinstance(frame, (bytes, bytearray, memoryview)):
                    frame = b""
                doc = {"reason": _text(it.get("reason", "unknown")),
                       "detail": _text(it.get("detail", "")), "time_ns": now,
                       "routing": _routing(it.get("routing")), "size": len(frame),
                       "frame": bytes(frame[:self.keep_bytes])}
                txn.put(key, msgpack.packb(doc, use_bin_type=True), db=self.db)

    def __iter__(self) -> Iterator[dict]:
        if self.env is None:
            return
        with self.env.begin() as txn:
            for _key, raw in txn.cursor(db=self.db).iternext():
                yield msgpack.unpackb(raw, raw=False, strict_map_key=False)

    def __len__(self) -> int:
        if self.env is None:
            return 0
        with self.env.begin() as txn:
            return txn.stat(self.db)["entries"]

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
