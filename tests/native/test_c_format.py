"""The C format/API additions as Python sees them through cffi: string table
size from the options, FC_ACTIVITY_OVERFLOW records, long names cut at
FC_NAME_MAX, fc_spill_pack (and its old name), -EPROTO for a ring of
another format version."""
import errno
import os

import pytest

_c = pytest.importorskip("flowcept._flowcept_c")
ffi, lib = _c.ffi, _c.lib


def make_ring(path, **opts):
    o = ffi.new("fc_ring_options *")
    lib.fc_ring_options_init(o)
    for k, v in opts.items():
        setattr(o, k, v)
    out = ffi.new("fc_ring **")
    assert lib.fc_ring_create(str(path).encode(), o, out) == 0
    return out[0]


def test_defaults_and_stats(tmp_path):
    o = ffi.new("fc_ring_options *")
    lib.fc_ring_options_init(o)
    assert (o.max_strings, o.strings_bytes) == (4096, 256 * 1024)
    r = make_ring(tmp_path / "r", max_strings=3, strings_bytes=100)
    try:
        assert [lib.fc_ring_intern(r, n, 1) for n in (b"a", b"b", b"c")] == [0, 1, 2]
        assert lib.fc_ring_intern(r, b"d", 1) == -errno.ENOSPC
        st = ffi.new("fc_ring_stats *")
        lib.fc_ring_get_stats(r, st)
        assert (st.max_strings, st.strings_bytes, st.string_count) == (3, 100, 3)
    finally:
        lib.fc_ring_close(r)


def test_long_name_is_cut(tmp_path):
    r = make_ring(tmp_path / "r")
    try:
        name = ("a" * (lib.FC_NAME_MAX - 1) + "é" + "tail").encode()
        assert lib.fc_name_cut(name, len(name)) == lib.FC_NAME_MAX - 1
        assert lib.fc_ring_intern(r, name, len(name)) == 0
        n = ffi.new("uint32_t *")
        s = lib.fc_ring_string(r, 0, n)
        assert ffi.unpack(s, n[0]) == b"a" * (lib.FC_NAME_MAX - 1)
    finally:
        lib.fc_ring_close(r)


def test_overflow_record_packs_and_validates(tmp_path):
    r = make_ring(tmp_path / "r", capacity=4096, max_strings=1)
    try:
        assert lib.fc_ring_intern(r, b"a", 1) == 0
        pre = ffi.new("char[64]")
        k = lib.fc_name_in_payload(b"big name", 8, pre, 64)
        assert k == 10
        payload = ffi.unpack(pre, k) + b"\x80"   # name, then an empty msgpack map
        pushed = [lib.fc_ring_push_task(r, i + 1, 0, 1, 1, 2, 0, 0, lib.FC_ACTIVITY_OVERFLOW, 0,
                                        lib.FC_FLAG_NAME_IN_PAYLOAD, payload, len(payload))
                  for i in range(100)]
        assert set(pushed) <= {0, 1} and 1 in pushed   # some spilled
        buf = ffi.new("char[]", 1 << 16)
        used = ffi.new("uint64_t *")
        n = lib.fc_ring_pack(r, buf, 1 << 16, 1000, used)
        assert n > 0 and lib.fc_batch_validate(buf, n) == 0
        spill = lib.fc_ring_spill_path(r)
        m = lib.fc_spill_pack(r, spill, 0, 0, buf, 1 << 16, 1000, used)
        assert m > 0 and lib.fc_batch_validate(buf, m) == 0
        frame = ffi.unpack(buf, m)
        assert lib.fc_spool_pack(r, spill, 0, 0, buf, 1 << 16, 1000, used) == m
        assert ffi.unpack(buf, m) == frame
        rec = ffi.cast("fc_task_record *", buf + ffi.sizeof("fc_batch_header"))
        assert rec.activity_id == lib.FC_ACTIVITY_OVERFLOW
        assert rec.flags & lib.FC_FLAG_FROM_SPILL and rec.flags & lib.FC_FLAG_NAME_IN_PAYLOAD
    finally:
        lib.fc_ring_close(r)


def test_other_format_version_is_eproto(tmp_path):
    path = tmp_path / "r"
    lib.fc_ring_close(make_ring(path))
    out = ffi.new("fc_ring **")
    with open(path, "r+b") as f:
        f.write(b"FCRING99")
    assert lib.fc_ring_open(str(path).encode(), out) == -errno.EPROTO
    with open(path, "r+b") as f:
        f.write(b"\0" * 8)               # magic not written yet: still being created
    assert lib.fc_ring_open(str(path).encode(), out) == -errno.EBADMSG
    os.unlink(path)
