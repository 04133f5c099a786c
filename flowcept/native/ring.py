"""Python handles on the C ring (producer and consumer sides)."""
from __future__ import annotations

import errno
import os
from typing import Optional

from flowcept.native import ffi, lib

_POLICIES = {"spill": 0, "block": 1, "drop": 2}


class RingError(OSError):
    pass


def _check(rc: int, what: str, path: str) -> int:
    if rc < 0:
        raise RingError(-rc, f"{what}: {os.strerror(-rc)}", path)
    return rc


def name_bytes(name: str) -> bytes:
    """UTF-8 bytes of a name (lone surrogates backslash-escaped, so the
    string table stays valid UTF-8; never raises), at most a
    few bytes over FC_NAME_MAX: the C side cuts at a character boundary."""
    if not isinstance(name, str):
        try:
            name = str(name)
        except Exception:
            name = f"<{type(name).__name__}>"
    cap = lib.FC_NAME_MAX + 4
    try:
        return name[:cap].encode()[:cap]
    except UnicodeEncodeError:
        return name[:cap].encode("utf-8", "backslashreplace")[:cap]


def name_prefix(name: str) -> bytes:
    """The FC_FLAG_NAME_IN_PAYLOAD payload prefix [u16 n][n bytes of name]."""
    data = name_bytes(name)
    out = ffi.new("char[]", len(data) + 2)
    n = lib.fc_name_in_payload(data, len(data), out, len(data) + 2)
    return ffi.buffer(out, n)[:] if n > 0 else b"\0\0"


class Ring:
    """One process's ring file.  ``create`` makes the producer side,
    ``open`` maps an existing file as its (single) consumer."""

    def __init__(self, handle, path: str, producer: bool):
        self.handle = handle
        self.path = path
        self.producer = producer
        self._lock_fd: Optional[int] = None

    def lock_consumer(self) -> bool:
        """Takes the ring's consumer lock: an flock on its file, let go at
        ``close`` or when this process ends however it ends.  A ring has one
        consumer; the lock keeps recovery (the epilog, ``flowcept recover``)
        off a ring that a live leader still drains.  False when another
        holds it."""
        if self._lock_fd is not None:
            return True
        import fcntl
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    @classmethod
    def create(cls, path: str, config, job_id: int, workflow_id: int, rank: int) -> "Ring":
        opts = ffi.new("fc_ring_options *")
        lib.fc_ring_options_init(opts)
        opts.capacity = config.ring_bytes
        opts.max_strings = config.ring_names
        opts.strings_bytes = config.ring_names_bytes
        opts.full_policy = _POLICIES[config.full_policy]
        opts.block_timeout_ns = config.block_timeout_ms * 1_000_000
        opts.job_id = job_id
        opts.workflow_id = workflow_id
        opts.rank = rank
        out = ffi.new("fc_ring **")
        _check(lib.fc_ring_create(path.encode(), opts, out), "cannot create ring", path)
        return cls(out[0], path, True)

    @classmethod
    def open(cls, path: str) -> "Ring":
        out = ffi.new("fc_ring **")
        _check(lib.fc_ring_open(path.encode(), out), "cannot open ring", path)
        return cls(out[0], path, False)

    def intern(self, name: str) -> int:
        """The id of name in the string table (the C side cuts it to
        FC_NAME_MAX bytes); -ENOSPC when the table is full (the caller then
        records the name in the payload, see name_prefix)."""
        data = name_bytes(name)
        rc = lib.fc_ring_intern(self.handle, data, len(data))
        if rc == -errno.ENOSPC:
            return rc
        return _check(rc, f"cannot intern {name[:80]!r}", self.path)

    def stats(self) -> dict:
        st = ffi.new("fc_ring_stats *")
        lib.fc_ring_get_stats(self.handle, st)
        return {k: getattr(st, k) for k in ("capacity", "head", "tail", "pushed", "spilled", "dropped",
                                             "torn", "job_id", "workflow_id", "ring_uid", "rank",
                                             "producer_pid", "closed")}

    def slot_task(self, pos: int) -> Optional[tuple]:
        """(task id, position after it) of the committed record reserved at
        absolute position pos (a padding slot before it is stepped over), or
        None: torn, not reserved, or overwritten by a later lap."""
        p = ffi.new("uint64_t *", pos)
        out = ffi.new("uint64_t *")
        return (out[0], p[0]) if lib.fc_ring_slot_task(self.handle, p, out) == 1 else None

    @property
    def spill_path(self) -> str:
        return ffi.string(lib.fc_ring_spill_path(self.handle)).decode()

    def close(self) -> None:
        if self.handle is not None:
            lib.fc_ring_close(self.handle)
            self.handle = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
