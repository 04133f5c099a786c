"""numpy arrays in the compiled wrapper (flowcept._fastcapture): the C
encoder writes exactly the bytes of the Python encoder (payload._describe)
for every array it takes - dtype names, shapes, "data" in full mode, sizes,
and min/max/mean with numpy's own summation order - and leaves the rest
(subclasses, odd dtypes and layouts, NaN/inf, ...) to the Python encoder.
Checked over generated arrays and numpy modes, and end to end through
decorated calls on both wrappers."""
import collections

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flowcept import Flowcept, flowcept_task
from flowcept.capture import session as runtime
from flowcept.query.tasks import read_records
from flowcept.record import payload

fast = pytest.importorskip("flowcept._fastcapture")

MODES = ["summary", "shape", "full", "something else"]   # anything but full/shape: summary


@pytest.fixture(autouse=True)
def rich_descriptions(monkeypatch):
    """Arrays described by dtype, shape and statistics (value_descriptions
    "rich"); the Flowcept text is checked in test_flowcept_text_on_both_encoders."""
    monkeypatch.setenv("FLOWCEPT_VALUE_DESCRIPTIONS", "rich")
    saved = dict(payload._settings)
    payload._settings["rich"] = True
    yield
    payload._settings.update(saved)


def test_flowcept_text_on_both_encoders():
    payload._settings["rich"] = False
    a = np.arange(6.0).reshape(2, 3)
    c = fast.encode({"a": a}, numpy_mode="flowcept", numpy_stats_max=4096,
                    max_payload_bytes=65536)
    py = msgpack.packb({"a": a}, default=payload._describe, use_bin_type=True)
    assert c == py and msgpack.unpackb(c) == {"a": f"ndarray_instance_id_{id(a)}"}


@pytest.fixture
def py_settings():
    """Restores payload.py's process-wide numpy settings after the test."""
    saved = dict(payload._settings)
    yield
    payload._settings.update(saved)


def python_bytes(value, mode, stats_max, max_payload):
    payload.configure(mode, max_payload, stats_max)
    return msgpack.packb(value, default=payload._describe, use_bin_type=True)


def c_bytes(value, mode, stats_max, max_payload):
    return fast.encode(value, numpy_mode=mode, numpy_stats_max=stats_max,
                       max_payload_bytes=max_payload)


def assert_same(value, mode="summary", stats_max=4096, max_payload=65536, must_encode=False):
    """The C bytes equal the Python bytes, or C defers (None); returns whether C encoded."""
    c = c_bytes(value, mode, stats_max, max_payload)
    if must_encode:
        assert c is not None, (value.dtype, value.shape, value.strides, mode, stats_max)
    if c is None:
        return False
    py = python_bytes(value, mode, stats_max, max_payload)
    assert c == py, (msgpack.unpackb(c), msgpack.unpackb(py))
    return True


def test_numpy_is_set_up():
    assert fast.numpy_ready()


def test_without_a_mode_arrays_go_to_python():
    assert fast.encode(np.zeros(3)) is None
    assert fast.encode([np.zeros(3)]) is None


# -- generated arrays -----------------------------------------------------------------------

DTYPES = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "q", "Q", "l", "L",
          "f2", "f4", "f8", "c8", "c16"]
ODD_DTYPES = [">f8", ">i4", "<U3", "S2", "O", "M8[s]", "m8[ms]", "g", "G", "V3",
              [("a", "<i4"), ("b", "<f8")]]


def _elements(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return st.one_of(
            st.floats(width=8 * dt.itemsize, allow_nan=False, allow_infinity=False),
            st.floats(width=8 * dt.itemsize),                       # NaN, inf
            st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.1, 1e-7, 6e-8, 65504.0, -3.5]))
    if dt.kind == "c":
        return st.complex_numbers(width=8 * dt.itemsize, allow_nan=True)
    return None


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    size_kind = draw(st.sampled_from(["small", "near-limit", "nd"]))
    if size_kind == "near-limit":
        limit = draw(st.sampled_from([7, 8, 127, 128, 129, 4096]))
        shape = (draw(st.integers(max(0, limit - 2), limit + 2)),)
    elif size_kind == "small":
        shape = (draw(st.integers(0, 40)),)
    else:
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    # a bigger base so that views keep shapes
    base_shape = tuple(2 * s + 1 for s in shape)
    base = draw(hnp.arrays(dtype, base_shape, elements=_elements(dtype)))
    layout = draw(st.sampled_from(["c", "fortran", "step", "reversed", "reversed-last",
                                   "transpose", "unaligned", "bool-bytes"]))
    a = base[tuple(slice(0, s) for s in shape)]
    if layout == "c":
        a = np.ascontiguousarray(a)
    elif layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "step":
        a = base[tuple(slice(0, 2 * s, 2) for s in shape)]
    elif layout == "reversed":
        a = base[tuple(slice(s - 1, None, -1) if s else slice(0, 0) for s in shape)]
    elif layout == "reversed-last":
        a = np.ascontiguousarray(a)[..., ::-1]
    elif layout == "transpose":
        a = np.ascontiguousarray(a).T
    elif layout == "unaligned" and a.dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)[1:]
        a = raw.view(a.dtype).reshape(a.shape)
        a[...] = base[tuple(slice(0, s) for s in shape)]
    elif layout == "bool-bytes" and a.dtype == np.bool_ and a.size:
        a = np.ascontiguousarray(a).view(np.uint8)
        a[0] = 2
        a = a.view(np.bool_)
    return a


settings_args = dict(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


@settings(**settings_args)
@given(a=arrays(), mode=st.sampled_from(["summary"] * 3 + MODES),
       stats_max=st.sampled_from([0, 1, 7, 8, 100, 127, 128, 129] + [4096] * 8),
       max_payload=st.sampled_from([0, 16, 100, 4096, 65536]))
def test_generated_arrays_byte_identical(py_settings, a, mode, stats_max, max_payload):
    with np.errstate(all="ignore"):
        assert_same(a, mode, stats_max, max_payload)
        assert_same({"u": a, "k": [a, 1]}, mode, stats_max, max_payload)


@pytest.mark.parametrize("dtype", ODD_DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_odd_dtypes_go_to_python(py_settings, dtype, mode):
    for shape in ((), (0,), (3,), (2, 2)):
        assert c_bytes(np.ones(shape, dtype=dtype), mode, 4096, 65536) is None


def test_odd_arrays_go_to_python(py_settings):
    class Sub(np.ndarray):
        pass
    structural = [np.float64(1.0).reshape(()), np.array(3), np.zeros(3).view(Sub),
                  np.ma.masked_array([1, 2], [0, 1]), np.zeros(3, dtype=np.longdouble),
                  np.zeros(2).view(np.recarray)]
    for a in structural:
        for mode in MODES:
            assert c_bytes(a, mode, 4096, 65536) is None, (a, mode)
    # statistics numpy might compute otherwise: the Python encoder; the other modes take them
    by_value = [np.array([1.0, np.nan]), np.array([np.inf, 1.0]), np.array([0.0, -0.0]),
                np.array([-0.0, 1.0, 0.0]), np.array([np.iinfo(np.int64).max, 1]),
                np.array([2**63, 1], dtype=np.uint64), np.zeros((4, 4))[::2, ::2],
                np.ones(3, dtype=np.float16) * np.float16(np.inf)]
    for a in by_value:
        assert c_bytes(a, "summary", 4096, 65536) is None, a
        assert_same(a, "shape", must_encode=True)
        assert_same(a, "full", must_encode=a.flags.c_contiguous)
    # signed zeros that leave min and max certain are fine
    assert_same(np.array([-0.0, 1.0, -2.0]), must_encode=True)
    assert_same(np.array([0.0, 1.0, 2.0], dtype=np.float32), must_encode=True)


# -- statistics: numpy's summation order --------------------------------------------------

def _layouts(v, rng):
    n = v.size
    yield v                                   # contiguous 1-d
    yield v[::-1]                             # negative stride
    full = np.empty(3 * n, v.dtype)
    full[::3] = v
    yield full[::3]                           # strided
    for rows in (2, 3, 8, 64):
        if n % rows == 0:
            yield v.reshape(rows, -1)         # C order
            yield np.asfortranarray(v.reshape(rows, -1))
            yield v.reshape(rows, -1).T       # Fortran order, transposed
            yield v.reshape(rows, 1, -1)      # a dim of 1
    yield v.reshape(1, n, 1)[:, :, :]


@pytest.mark.parametrize("dtype", ["f8", "f4"])
def test_float_means_follow_numpy_summation(py_settings, dtype):
    rng = np.random.default_rng(7)
    sizes = [1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 130, 255, 256, 257, 1000, 1023, 4096,
             8191, 8192, 8193, 12288, 40000, 100003]
    encoded = 0
    for n in sizes:
        for scale in (1.0, 1e-3, 1e12):
            v = (rng.standard_normal(n) * scale + scale / 3).astype(dtype)
            for a in _layouts(v, rng):
                encoded += assert_same(a, "summary", stats_max=n, must_encode=True)
    assert encoded > 300


@pytest.mark.parametrize("dtype", ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2"])
def test_exact_means(py_settings, dtype):
    """Integers and float16: sums that no order changes, computed here."""
    rng = np.random.default_rng(11)
    for n in (1, 5, 8, 100, 129, 4096, 9000, 20000):
        if dtype == "?":
            v = rng.integers(0, 2, n).astype(bool)
        elif dtype == "f2":
            v = (rng.integers(-256, 256, n) / 8).astype(np.float16)   # multiples of 1/8
        else:
            info = np.iinfo(dtype)
            hi = min(int(info.max), 2**53 // n - 1)
            lo = max(int(info.min), -hi)
            v = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64 if info.min < 0 else np.uint64)
            v = v.astype(dtype)
        for a in _layouts(v, rng):
            assert_same(a, "summary", stats_max=n, must_encode=True)


def test_inexact_sums_go_to_python(py_settings):
    """Where the cast buffer's size could change numpy's result."""
    big = np.array([2**53, 1, 1, 3], dtype=np.int64)
    half = np.array([60000, 0.001, 0.002], dtype=np.float16)
    for a in (big, half):
        assert c_bytes(a, "summary", 4096, 65536) is None


# -- end to end: decorated calls on both wrappers -----------------------------------------

CALL_ARRAYS = [np.zeros((128, 1024)), np.linspace(0, 1, 1000), np.arange(12).reshape(3, 4),
               np.asfortranarray(np.arange(12.0).reshape(3, 4) / 7), np.zeros(0), np.ones(3, bool),
               np.arange(10.0)[::-1], np.arange(20.0)[::3], np.array([1.0, np.nan]),
               np.zeros((4, 4))[::2, ::2], np.ones(5, dtype=">f8"), np.arange(4096.0) / 3,
               np.arange(4097.0), np.array(2.5), np.ones(3, np.float16) / 3]


def _payloads(run_dir):
    r = read_records(run_dir)
    out = collections.defaultdict(list)
    for i in np.argsort(r.records["start_ns"], kind="stable").tolist():
        name, kind = r.activity[i].rsplit("-", 1)
        out[kind].append((name, bytes(r.payloads[i])))
    return out


def _calls(kind):
    @flowcept_task(activity_id=f"diffuse-{kind}")
    def diffuse(step, u, alpha):
        return u

    @flowcept_task(activity_id=f"named-{kind}", output_names=["a", "b"])
    def named(u):
        return u, [u, {"x": u}]

    assert isinstance(diffuse, fast.Task) == (kind == "c")
    for i, u in enumerate(CALL_ARRAYS):
        diffuse(i, u, 0.1)
        diffuse(step=i, u=u, alpha=None)
        named(u)


@pytest.fixture
def state_with_numpy_settings(monkeypatch):
    """The session's compiled State built with payload.py's numpy settings
    (what session._fast_state passes)."""
    real = fast.State

    def state(*args, **kwargs):
        kwargs.setdefault("numpy_mode", payload._settings["numpy_mode"])
        kwargs.setdefault("numpy_stats_max", payload._settings["numpy_stats_max"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fast, "State", state)


@pytest.mark.parametrize("config", [
    {}, {"numpy_mode": "shape"}, {"numpy_mode": "full"}, {"numpy_mode": "full", "max_payload_bytes": 2000},
    {"numpy_stats_max": 8}, {"max_payload_bytes": 300},
], ids=["default", "shape", "full", "full-small-max", "stats-max-8", "small-max"])
def test_payloads_identical_on_both_paths(run_dir, monkeypatch, py_settings, config,
                                          state_with_numpy_settings):
    with np.errstate(all="ignore"), Flowcept(**config):
        monkeypatch.delenv("FLOWCEPT_PURE_PYTHON", raising=False)
        _calls("c")
        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")
        _calls("py")
    got = _payloads(run_dir)
    assert len(got["c"]) == 3 * len(CALL_ARRAYS) == len(got["py"])
    for c, py in zip(got["c"], got["py"]):
        assert c[0] == py[0]
        assert c[1] == py[1], (c[0], msgpack.unpackb(c[1], strict_map_key=False),
                               msgpack.unpackb(py[1], strict_map_key=False))


def test_default_session_state_matches_python_defaults(run_dir, monkeypatch):
    """Without the numpy settings the State uses payload.py's defaults."""
    monkeypatch.delenv("FLOWCEPT_PURE_PYTHON", raising=False)
    with Flowcept():
        assert runtime.current()._fast is not None
        assert payload._settings["numpy_mode"] == "summary"
        assert payload._settings["numpy_stats_max"] == 4096
        _calls("c")
    assert len(_payloads(run_dir)["c"]) == 3 * len(CALL_ARRAYS)


def test_state_numpy_arguments():
    from flowcept.native import ffi, lib
    push = int(ffi.cast("uintptr_t", ffi.addressof(lib, "fc_ring_push_task")))
    base = (push, 1, 0, 0, 0, True, 65536, lambda name: 0)
    fast.State(*base, numpy_mode="full", numpy_stats_max=10)
    fast.State(*base)
    with pytest.raises(TypeError):
        fast.State(*base, "summary")              # keyword only
    with pytest.raises(TypeError):
        fast.State(*base, numpy_stats_max="many")


def test_payload_limit_below_the_inline_buffer(run_dir, monkeypatch):
    """A payload between max_payload_bytes and the C encoder's inline buffer
    is summarised on both paths alike."""
    def calls(kind):
        @flowcept_task(activity_id=f"text-{kind}")
        def f(text, n):
            return text

        for n in (10, 40, 80, 200, 500):
            f("x" * n, n)

    with Flowcept(max_payload_bytes=100):
        monkeypatch.delenv("FLOWCEPT_PURE_PYTHON", raising=False)
        calls("c")
        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")
        calls("py")
    got = _payloads(run_dir)
    assert len(got["c"]) == 5 == len(got["py"])
    assert [p for _, p in got["c"]] == [p for _, p in got["py"]]
    assert all(len(p) <= 100 for _, p in got["c"])
