import argparse

import numpy as np
import pytest

from flowcept.record import payload


@pytest.fixture(autouse=True)
def rich_descriptions():
    """These tests describe values the rich way (value_descriptions="rich");
    the Flowcept way is tested at the end."""
    payload.configure("summary", 65536, value_descriptions="rich")
    yield
    payload.configure("summary", 65536, value_descriptions="flowcept")


class NoRepr:
    def __repr__(self):
        raise RuntimeError("boom")


def test_roundtrip_plain_values():
    doc = {"used": {"a": 1, "b": 2.5, "c": "x", "d": [1, 2], "e": None, "f": True}}
    assert payload.decode(payload.encode(doc)) == doc


def test_numpy_summary_not_copied():
    a = np.arange(1000, dtype=np.float64)
    out = payload.decode(payload.encode({"used": {"a": a}}))["used"]["a"]
    assert out["__ndarray__"] and out["shape"] == [1000] and out["dtype"] == "float64"
    assert out["min"] == 0 and out["max"] == 999 and "data" not in out


def test_large_array_recorded_by_shape_only():
    # statistics over a large array would cost more than the task: skipped
    a = np.zeros((512, 1024))
    out = payload.decode(payload.encode({"used": {"a": a}}))["used"]["a"]
    assert out["shape"] == [512, 1024] and out["nbytes"] == a.nbytes and "min" not in out
    payload.configure("shape", 65536)
    try:
        small = payload.decode(payload.encode({"used": {"a": np.ones(3)}}))["used"]["a"]
        assert "min" not in small and small["shape"] == [3]
    finally:
        payload.configure("summary", 65536)


def test_numpy_full_mode_small_array():
    payload.configure("full", 65536)
    try:
        a = np.arange(10, dtype=np.int32)
        out = payload.decode(payload.encode({"used": {"a": a}}))["used"]["a"]
        assert np.frombuffer(out["data"], np.int32).tolist() == list(range(10))
    finally:
        payload.configure("summary", 65536)


def test_unserializable_recorded_by_type_and_repr():
    out = payload.decode(payload.encode({"used": {"o": object(), "n": NoRepr(), "s": {3}}}))["used"]
    assert out["o"]["__type__"] == "builtins.object" and "object" in out["o"]["repr"]
    assert out["n"]["__type__"].endswith("NoRepr") and "repr failed" in out["n"]["repr"]
    assert out["s"] == [3]


def test_oversized_payload_is_summarised():
    payload.configure("summary", 1000)
    try:
        out = payload.decode(payload.encode({"used": {"big": "x" * 5000}}))
        assert out["truncated"] and out["bytes"] > 5000 and out["keys"]["used"] == ["big"]
    finally:
        payload.configure("summary", 65536)


def test_huge_int_does_not_raise():
    out = payload.decode(payload.encode({"used": {"i": 1 << 100}}))
    assert "encode_error" in out or out["used"]["i"]["__type__"] == "builtins.int"


def test_flowcept_descriptions_by_default_setting():
    payload.configure("summary", 65536, value_descriptions="flowcept")

    class WithDict:
        def to_dict(self):
            return {"k": 1}

    obj = object()
    arr = np.ones(3)
    ns = argparse.Namespace(a=1, b="x")
    out = payload.decode(payload.encode({"used": {"o": obj, "a": arr, "n": ns, "d": WithDict(),
                                                  "f": np.float32(1.5), "s": {1}}}))["used"]
    assert out["o"] == f"object_instance_id_{id(obj)}"
    assert out["a"] == f"ndarray_instance_id_{id(arr)}"
    assert out["n"] == {"a": 1, "b": "x"} and out["d"] == {"k": 1} and out["f"] == 1.5
    assert out["s"].startswith("set_instance_id_")
