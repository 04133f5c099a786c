"""Encoding of a task's used/generated values (msgpack).

Never raises into the user's function: values msgpack cannot take are
recorded by type and repr; numpy arrays by dtype and shape, plus min/max/mean
for arrays of at most numpy_stats_max elements (numpy_mode="summary", the
default), by dtype and shape alone ("shape"), or in full ("full", up to
max_payload_bytes); payloads over max_payload_bytes are
replaced by a summary of what was dropped.
"""
from __future__ import annotations

import threading
from typing import Any

import msgpack

_REPR_LIMIT = 200
_DTYPE_NAMES: dict = {}
_local = threading.local()
_settings = {"numpy_mode": "summary", "max_payload_bytes": 65536, "numpy_stats_max": 4096}


def configure(numpy_mode: str, max_payload_bytes: int, numpy_stats_max: int = 4096) -> None:
    _settings["numpy_mode"] = numpy_mode
    _settings["max_payload_bytes"] = max_payload_bytes
    _settings["numpy_stats_max"] = numpy_stats_max


def _describe(obj: Any) -> Any:
    """msgpack `default` hook: a msgpack-able stand-in for obj."""
    cls = type(obj)
    module = getattr(cls, "__module__", "")
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            dtype = _DTYPE_NAMES.get(obj.dtype)
            if dtype is None:   # str(dtype) costs microseconds: once per dtype
                dtype = _DTYPE_NAMES[obj.dtype] = str(obj.dtype)
            info = {"__ndarray__": True, "dtype": dtype, "shape": list(obj.shape)}
            if _settings["numpy_mode"] == "full" and obj.nbytes <= _settings["max_payload_bytes"]:
                info["data"] = obj.tobytes()
            elif (_settings["numpy_mode"] != "shape" and 0 < obj.size <= _settings["numpy_stats_max"]
                  and obj.dtype.kind in "biuf"):
                # statistics cost a pass over the data: only for small arrays,
                # so that capture stays cheap next to the task itself
                info.update(min=obj.min().item(), max=obj.max().item(),
                            mean=float(obj.mean()))
            else:
                info["nbytes"] = int(obj.nbytes)
            return info
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    try:
        text = repr(obj)
    except Exception as e:  # a broken __repr__ must not break the task
        text = f"<repr failed: {type(e).__name__}>"
    return {"__type__": f"{module}.{cls.__qualname__}", "repr": text[:_REPR_LIMIT]}


def _packer() -> msgpack.Packer:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer(default=_describe, use_bin_type=True,
                                           datetime=False, strict_types=False)
    return p


def encode(doc: dict) -> bytes:
    """msgpack bytes of doc; never raises."""
    try:
        out = _packer().pack(doc)
    except Exception as e:  # e.g. recursion, int too large, mutated while packing
        _local.packer = None
        out = msgpack.packb({k: _describe(v) if k in ("used", "generated") else v
                             for k, v in doc.items()} | {"encode_error": repr(e)[:_REPR_LIMIT]},
                            default=_describe, use_bin_type=True)
    if len(out) > _settings["max_payload_bytes"]:
        out = msgpack.packb({"truncated": True, "bytes": len(out),
                             "keys": {k: sorted(v) if isinstance(v, dict) else type(v).__name__
                                      for k, v in doc.items()}},
                            default=_describe, use_bin_type=True)
    return out


def decode(data: bytes) -> Any:
    if not data:
        return {}
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
