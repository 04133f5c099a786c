"""Encoding of a task's used/generated values (msgpack).

Never raises into the user's function.  Values msgpack cannot take are, by
default (value_descriptions="flowcept"), the text Flowcept writes for them:
``<Class>_instance_id_<id>`` (an argparse.Namespace as its fields, an object
whose class defines ``to_flowcept_dict`` or ``to_dict`` as what that
returns).  With value_descriptions="rich" they are recorded by type and repr,
and numpy arrays by dtype and shape, plus min/max/mean for arrays of at most
numpy_stats_max elements (numpy_mode="summary"), by dtype and shape alone
("shape"), or in full ("full", up to max_payload_bytes).  Payloads over
max_payload_bytes are replaced by a summary of what was dropped.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import msgpack

_REPR_LIMIT = 200
_DTYPE_NAMES: dict = {}
_local = threading.local()
_settings = {"numpy_mode": "summary", "max_payload_bytes": 65536, "numpy_stats_max": 4096,
             "rich": False}


def configure(numpy_mode: str, max_payload_bytes: int, numpy_stats_max: int = 4096,
              value_descriptions: Optional[str] = None) -> None:
    """Sets how values are encoded (value_descriptions None: as it was)."""
    _settings["numpy_mode"] = numpy_mode
    _settings["max_payload_bytes"] = max_payload_bytes
    _settings["numpy_stats_max"] = numpy_stats_max
    if value_descriptions is not None:
        _settings["rich"] = value_descriptions == "rich"


def flowcept_text(obj: Any) -> Any:
    """Flowcept's stand-in for a value JSON cannot hold."""
    cls = type(obj)
    method = cls.__dict__.get("to_flowcept_dict") or cls.__dict__.get("to_dict")
    if method is not None:
        try:
            return method(obj)
        except Exception:   # a broken to_dict falls back to the text
            pass
    if cls.__name__ == "Namespace" and cls.__module__ == "argparse":
        return dict(vars(obj))
    if cls is int:   # past 64 bits: JSON holds it, msgpack does not; its digits
        return str(obj)
    return f"{_safe_text(getattr(cls, '__name__', 'object'))}_instance_id_{id(obj)}"


def _describe(obj: Any) -> Any:
    """msgpack `default` hook: a msgpack-able stand-in for obj."""
    cls = type(obj)
    module = getattr(cls, "__module__", "")
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray) and not _settings["rich"]:
            return flowcept_text(obj)
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
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if not _settings["rich"]:
        return flowcept_text(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    # a broken __repr__ (or one returning surrogates) must not break the task
    return {"__type__": _safe_text(f"{module}.{getattr(cls, '__qualname__', cls.__name__)}"),
            "repr": _safe_text(obj)}


def _packer() -> msgpack.Packer:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer(default=_describe, use_bin_type=True,
                                           datetime=False, strict_types=False)
    return p


# payloads replaced (in part or whole) by a placeholder, since process start
placeholders = [0]


def _key_names(v: Any) -> Any:
    """The keys of a dropped dict, as msgpack-able text (keys of any type)."""
    if not isinstance(v, dict):
        return type(v).__name__
    out = []
    for k in list(v)[:64]:
        out.append(_safe_text(k))
    return out


def placeholder(what: str, error: Any = None) -> bytes:
    """A payload that stands for one that could not be encoded (counted)."""
    placeholders[0] += 1
    doc = {"capture_error": what}
    if error is not None:
        doc["reason"] = _safe_text(error)
    return _packb_safe(doc)


def _safe_text(obj: Any, limit: int = _REPR_LIMIT) -> str:
    """repr-like text of obj that never raises and is valid UTF-8."""
    try:
        text = obj if isinstance(obj, str) else repr(obj)
        text = str.__str__(text)[:limit] if isinstance(text, str) else "<not text>"
    except Exception as e:
        try:
            text = f"<repr failed: {type(e).__name__}>"
        except Exception:
            text = "<repr failed>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _packb_safe(doc: Any) -> bytes:
    try:
        return msgpack.packb(doc, default=_describe, use_bin_type=True)
    except Exception:
        return b"\x81\xadcapture_error\xa7payload"   # {"capture_error": "payload"}


_SCALAR_KEYS = (str, int, float, bool, bytes, type(None))
_checker = None


def _readable(data: bytes) -> bool:
    """Whether a reader can decode data (decode() below: one msgpack value,
    hashable map keys, nested at most MAX_DEPTH deep)."""
    global _checker
    if _checker is None:
        try:   # the compiled check: a scan of the bytes, tens of ns
            from flowcept._fastcapture import check as _checker
        except ImportError:   # pragma: no cover - pure-Python install
            def _checker(b, depth):
                try:
                    decode(b)
                    return True
                except PayloadError:
                    return False
    return _checker(data, MAX_DEPTH)


def _sanitize(v: Any, depth: int = 0) -> Any:
    """v with every map key a reader can hash (others by their text) and
    text that is valid UTF-8; containers deeper than the readers allow cut."""
    if depth > MAX_DEPTH - 8:
        return "<nested too deep>"
    if isinstance(v, str):
        try:
            v.encode()
            return v
        except UnicodeEncodeError:
            return _safe_text(v, len(v) * 10 + 10)
    if isinstance(v, dict):
        return {(_sanitize(k, depth) if isinstance(k, _SCALAR_KEYS) else _safe_text(k)):
                _sanitize(x, depth + 1) for k, x in list(v.items())}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_sanitize(x, depth + 1) for x in list(v)]
    return v


class _Unreadable(Exception):
    pass


def _pack_lenient(doc: dict, error: Any) -> bytes:
    """doc key by key: each value sanitized, else by its type and repr."""
    fixed = {}
    for k, v in list(doc.items()):
        try:
            v = _sanitize(v)
            if not _readable(msgpack.packb(v, default=_describe, use_bin_type=True)):
                raise _Unreadable
            fixed[_safe_text(k)] = v
        except Exception:
            fixed[_safe_text(k)] = {"__type__": _safe_text(type(v).__name__), "repr": _safe_text(v)}
    if error is not None:
        fixed["encode_error"] = _safe_text(error)
    return _packb_safe(fixed)


def encode(doc: dict, limit: Optional[int] = None) -> bytes:
    """msgpack bytes of doc that every reader can decode; never raises (what
    cannot be encoded as is is sanitized or replaced by a counted
    placeholder).  Larger than ``limit`` (default max_payload_bytes): a
    summary of what was dropped."""
    try:
        try:
            out = _packer().pack(doc)
            if not _readable(out):   # e.g. tuple or object map keys
                raise _Unreadable
        except Exception as e:  # recursion, int too large, surrogates, mutated while packing
            _local.packer = None
            placeholders[0] += 1
            out = _pack_lenient(doc, None if isinstance(e, _Unreadable) else e)
        if len(out) > (limit or _settings["max_payload_bytes"]):
            placeholders[0] += 1
            out = _packb_safe({"truncated": True, "bytes": len(out),
                               "keys": {_safe_text(k): _key_names(v) for k, v in doc.items()}})
        if not _readable(out):
            out = placeholder("payload")
        return out
    except Exception as e:  # a last resort: the doc itself is hostile
        return placeholder("payload", e)


# -- decoding (readers, store, keeper) ------------------------------------
# The same rule everywhere a payload is decoded: msgpack, str as str, map
# keys of any hashable type (strict_map_key=False: capture may store int
# keys), no container nested deeper than MAX_DEPTH (what capture's packer
# can write), and no trailing bytes.
MAX_DEPTH = 511
# Record flag and activity id of a record whose name did not fit in its
# ring's string table (csrc/fc_format.h FC_FLAG_NAME_IN_PAYLOAD,
# FC_ACTIVITY_OVERFLOW): its payload is [u16 LE n][n name bytes][payload].
FLAG_NAME_IN_PAYLOAD = 16
ACTIVITY_OVERFLOW = 0xFFFFFFFF
NAME_MAX = 1024


class PayloadError(ValueError):
    """A payload that does not decode, or has the wrong shape."""


def decode(data) -> Any:
    """The value of a msgpack payload ({} for an empty one).  Raises
    PayloadError (a ValueError) on anything else: not msgpack, trailing
    bytes, unhashable map keys, bad UTF-8, nesting deeper than MAX_DEPTH."""
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:   # ExtraData, StackError, TypeError (unhashable key), ...
        detail = _short(e)
        raise PayloadError(f"not msgpack ({type(e).__name__}{': ' + detail if detail else ''})") from None
    if len(data) > MAX_DEPTH:    # each level costs a byte: shorter ones are shallow enough
        _check_depth(value)
    return value


def decode_map(data) -> dict:
    """decode() of a payload that must be a map (workflow documents)."""
    value = decode(data)
    if not isinstance(value, dict):
        raise PayloadError(f"a map was expected, not {type(value).__name__}")
    return value


def _short(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:
        text = ""
    return text[:_REPR_LIMIT].encode("utf-8", "backslashreplace").decode("utf-8")


def _check_depth(value) -> None:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = list(v.values())
            children.extend(k for k in v if isinstance(k, tuple))
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if depth > MAX_DEPTH:
            raise PayloadError(f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))


def split_name(payload, flags: int):
    """(name, own payload) of a record: name is None unless the record
    carries its activity name in front of its payload (flag
    FLAG_NAME_IN_PAYLOAD); a malformed prefix gives (None, payload)."""
    if not flags & FLAG_NAME_IN_PAYLOAD or len(payload) < 2:
        return None, payload
    n = payload[0] | payload[1] << 8
    if n > NAME_MAX or 2 + n > len(payload):
        return None, payload
    return bytes(payload[2:2 + n]).decode("utf-8", "replace"), payload[2 + n:]


def decode_or_raw(data, flags: int):
    """(value, ok) for readers: the decoded payload when ``flags`` say
    msgpack and it decodes, else the raw bytes (ok False only for a payload
    flagged msgpack that does not decode).  Never raises."""
    from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK
    if not flags & FLAG_PAYLOAD_MSGPACK:
        return (bytes(data) if data else {}), True
    try:
        return decode(data), True
    except PayloadError:
        return bytes(data), False


def check_records(records, payload) -> None:
    """Raises PayloadError, naming the record, unless every record's payload
    is what its flags say.  ``records`` is a RECORD_DTYPE array, ``payload``
    the batch's payload area.

    Workflow records: a msgpack map that decode_map() accepts (the store
    merges and re-encodes it).  Tasks flagged msgpack: exactly one msgpack
    value filling the payload, sizes within it, nesting within msgpack's
    own stack (checked by skipping, not building: ~0.5 us a record); what
    only a full decode finds (bad UTF-8, an unhashable key, nesting deeper
    than MAX_DEPTH) the readers count and keep raw.  A name prefix must be
    well-formed."""
    from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW
    flags = records["flags"]
    wanted = FLAG_PAYLOAD_MSGPACK | FLAG_WORKFLOW | FLAG_NAME_IN_PAYLOAD
    rows = (flags & wanted).nonzero()[0]
    if not len(rows):
        return
    offs = records["payload_off"]
    lens = records["payload_len"]
    plain = (flags[rows] & (FLAG_WORKFLOW | FLAG_NAME_IN_PAYLOAD)) == 0
    stream = rows[plain]
    if len(stream):   # the common case: plain msgpack tasks, in offset order
        _skip_stream(payload, stream[offs[stream].argsort(kind="stable")].tolist(),
                     offs.tolist(), lens.tolist())
    fl = flags.tolist()
    for i in rows[~plain].tolist():
        f = fl[i]
        o = int(offs[i])
        data = payload[o:o + int(lens[i])]
        if f & FLAG_NAME_IN_PAYLOAD:
            name, data = split_name(data, f)
            if name is None:
                raise PayloadError(f"record {i}: malformed activity name prefix")
        try:
            if f & FLAG_WORKFLOW:
                decode_map(data)
            elif f & FLAG_PAYLOAD_MSGPACK:
                _skip_one(data)
        except PayloadError as e:
            kind = "workflow" if f & FLAG_WORKFLOW else "task"
            raise PayloadError(f"record {i} ({kind}): payload {e}") from None


def _skip_stream(payload, rows, offs, lens) -> None:
    """Each row's payload is one msgpack value filling it (rows in offset order)."""
    size = len(payload)
    u = msgpack.Unpacker(max_buffer_size=size + 1)
    u.feed(payload)
    pos = 0
    for i in rows:
        o, n = offs[i], lens[i]
        if not n:
            continue
        if o < pos:        # overlapping payloads: that record on its own
            try:
                _skip_one(payload[o:o + n])
            except PayloadError as e:
                raise PayloadError(f"record {i} (task): payload {e}") from None
            continue
        try:
            if o > pos:
                u.read_bytes(o - pos)
            u.skip()
            pos = u.tell()
        except Exception as e:
            raise PayloadError(f"record {i} (task): payload not msgpack "
                               f"({type(e).__name__}{': ' + _short(e) if _short(e) else ''})") from None
        if pos != o + n:
            raise PayloadError(f"record {i} (task): payload not msgpack (its value ends at byte "
                               f"{pos - o} of {n})")


def _skip_one(data) -> None:
    if not len(data):
        return
    u = msgpack.Unpacker(max_buffer_size=len(data) + 1)
    u.feed(data)
    try:
        u.skip()
    except Exception as e:
        raise PayloadError(f"not msgpack ({type(e).__name__}"
                           f"{': ' + _short(e) if _short(e) else ''})") from None
    if u.tell() != len(data):
        raise PayloadError(f"not msgpack (its value ends at byte {u.tell()} of {len(data)})")
