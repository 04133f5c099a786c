"""Frames into columns: the one decoder of a batch.

Every reader of stored batches (``flowcept.query.search``, ``read_tasks``,
the access layer, ``Flowcept.db``) turns a frame into a :class:`Block`
here and nowhere else.  A block is task rows in columns: the record fields
as numpy arrays (views into the frame where nothing had to change),
``activity`` and ``node`` as codes into the block's string table, and each
row's own payload as an offset and a length into the payload area.

A record whose activity name did not fit in its ring's string table
(``FLAG_NAME_IN_PAYLOAD``, activity id ``ACTIVITY_OVERFLOW``) carries the
name in front of its payload: the name joins the block's string table, the
row's code points at it, its payload offset and length skip the prefix and
the flag is cleared, so nothing above ever sees a prefix.  Workflow records
(``FLAG_WORKFLOW``) are not task rows and are left out.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from flowcept.record.layout import FLAG_WORKFLOW, RECORD_DTYPE, node_of
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD, NAME_MAX

# record fields a block carries as they are (activity_id and payload_off/len are remapped)
RECORD_FIELDS = ("task_id", "parent_id", "workflow_id", "start_ns", "end_ns", "rank",
                 "thread_id", "status", "flags")


class Block:
    """Task rows in columns.

    ``cols``: name -> numpy array of length ``n``: the RECORD_FIELDS, plus
    ``activity`` and ``node`` (codes into ``strings``) and ``payload_off`` /
    ``payload_len`` (each row's own payload in ``payload``, any name prefix
    skipped).  ``payload`` is a buffer (bytes, memoryview or uint8 array) or
    an object with ``read(offs, lens) -> list of bytes`` (archives, whose
    payloads are read by chunk only for the rows asked).  ``key`` names the
    block (a batch key, or an archive row range) and ``base`` is the row
    number of its first row in its source (archives) or 0."""

    __slots__ = ("cols", "strings", "payload", "n", "key", "base", "_str_array")

    def __init__(self, cols: Dict[str, np.ndarray], strings: Sequence[str], payload, key=None,
                 base: int = 0, n: Optional[int] = None, str_array: Optional[np.ndarray] = None):
        self.cols = cols
        self.strings = strings if isinstance(strings, list) else list(strings)
        self.payload = payload
        self.n = len(cols["task_id"]) if n is None else n
        self.key = key
        self.base = base
        self._str_array = str_array

    def __len__(self) -> int:
        return self.n

    def string_array(self) -> np.ndarray:
        """The string table as an object array (index it with codes)."""
        if self._str_array is None:
            self._str_array = np.array(self.strings + [""], dtype=object)[:-1] \
                if self.strings else np.zeros(0, object)
        return self._str_array

    def names(self, code_col: str, rows=None) -> np.ndarray:
        """Strings of a code column (``activity``, ``node``) for rows (all by default)."""
        codes = self.cols[code_col] if rows is None else self.cols[code_col][rows]
        table = self.string_array()
        if not len(table):
            return np.full(len(codes), "", dtype=object)
        return table[np.minimum(codes, len(table) - 1)]

    def payloads(self, rows) -> List[bytes]:
        """The own payload bytes of each row (b"" for none)."""
        rows = np.asarray(rows, np.int64)
        offs = self.cols["payload_off"][rows]
        lens = self.cols["payload_len"][rows]
        reader = getattr(self.payload, "read", None)
        if reader is not None:
            return reader(offs, lens)
        buf = self.payload
        return [bytes(buf[o:o + n]) if n else b"" for o, n in zip(offs.tolist(), lens.tolist())]

    def take(self, rows) -> "Block":
        """A block of some of this block's rows (same strings and payload)."""
        rows = np.asarray(rows, np.int64)
        return Block({k: v[rows] for k, v in self.cols.items()}, self.strings, self.payload,
                     self.key, self.base)


def _header_view(frame):
    """(records, payload area, strings, header) of a frame, viewed in place."""
    from flowcept.native.batch import Batch
    b = Batch(frame, check=False)
    return b.records, b.payload, b.strings, b.header


def decode_frame(frame, key=None) -> Block:
    """The task rows of one batch frame (already validated when stored)."""
    recs, payload, strings, _h = _header_view(frame)
    return decode_records(recs, payload, strings, key)


def decode_records(recs: np.ndarray, payload, strings: Sequence[str], key=None) -> Block:
    """The task rows of a batch's record array, payload area and string table."""
    flags = recs["flags"]
    wf_rows = flags & FLAG_WORKFLOW
    if wf_rows.any():
        recs = recs[wf_rows == 0]
        flags = recs["flags"]
    strings = list(strings)
    node = node_of(strings)
    node_code = len(strings)
    strings.append(node)
    n = len(recs)
    cols = {f: recs[f] for f in RECORD_FIELDS}
    cols["activity"] = recs["activity_id"]
    cols["activity_id"] = recs["activity_id"]     # as recorded (ACTIVITY_OVERFLOW for a named row)
    cols["payload_off"] = recs["payload_off"]
    cols["payload_len"] = recs["payload_len"]
    cols["node"] = np.broadcast_to(np.uint32(node_code), (n,))
    named = np.flatnonzero(flags & FLAG_NAME_IN_PAYLOAD)
    if len(named):
        _apply_name_prefixes(cols, named, payload, strings)
    return Block(cols, strings, payload, key)


def _apply_name_prefixes(cols: dict, rows: np.ndarray, payload, strings: List[str]) -> None:
    """Names carried in payload prefixes into the string table; the rows'
    payloads start after the prefix; the flag is cleared.  A malformed
    prefix leaves the row as it is (its name from its activity id)."""
    act = cols["activity"] = cols["activity"].copy()
    off = cols["payload_off"] = cols["payload_off"].copy()
    ln = cols["payload_len"] = cols["payload_len"].copy()
    fl = cols["flags"] = cols["flags"].copy()
    index = {s: i for i, s in enumerate(strings)}
    for i in rows.tolist():
        o, m = int(off[i]), int(ln[i])
        if m < 2:
            continue
        k = payload[o] | payload[o + 1] << 8
        if k > NAME_MAX or 2 + k > m:
            continue
        name = bytes(payload[o + 2:o + 2 + k]).decode("utf-8", "replace")
        code = index.get(name)
        if code is None:
            code = index[name] = len(strings)
            strings.append(name)
        act[i] = code
        off[i] = o + 2 + k
        ln[i] = m - 2 - k
        fl[i] &= ~np.uint16(FLAG_NAME_IN_PAYLOAD)


def empty_block() -> Block:
    z = np.zeros(0, RECORD_DTYPE)
    cols = {f: z[f] for f in RECORD_FIELDS}
    cols.update(activity=z["activity_id"], node=z["activity_id"], payload_off=z["payload_off"],
                payload_len=z["payload_len"])
    return Block(cols, [], b"")


def concat(blocks: Sequence[Block]) -> Block:
    """One block of several (string tables merged, payloads copied into one
    buffer): for small answers that leave the engine whole."""
    blocks = [b for b in blocks if b.n]
    if not blocks:
        return empty_block()
    if len(blocks) == 1:
        return blocks[0]
    index: Dict[str, int] = {}
    cols: Dict[str, list] = {k: [] for k in blocks[0].cols}
    pay = bytearray()
    for b in blocks:
        lut = np.array([index.setdefault(s, len(index)) for s in b.strings] or [0], np.uint32)
        for k, v in b.cols.items():
            if k in ("activity", "node"):
                cols[k].append(lut[np.minimum(v, len(lut) - 1)])
            elif k == "payload_off":
                continue
            else:
                cols[k].append(np.asarray(v))
        data = b.payloads(np.arange(b.n))
        offs = np.empty(b.n, np.uint64)
        for j, d in enumerate(data):
            offs[j] = len(pay)
            pay += d
        cols["payload_off"].append(offs)
    strings = [None] * len(index)
    for s, i in index.items():
        strings[i] = s
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["payload_len"] = out["payload_len"].astype(np.uint64)
    return Block(out, strings, bytes(pay))


def frame_key(frame) -> bytes:
    from flowcept.native.batch import Batch
    return Batch(frame, check=False).key


def store_blocks(store, keys: Optional[Sequence[bytes]] = None, seen: Optional[set] = None):
    """(key, Block) of a store's batches (all, or ``keys``), skipping batch ids
    already in ``seen`` (and adding the others): a batch found in two stores
    is read once."""
    for key, frame in store.scan(keys=keys):
        key = bytes(key)
        if seen is not None:
            if key in seen:
                continue
            seen.add(key)
        yield key, decode_frame(frame, key)


class LazyColumns(dict):
    """Block columns read on first use: ``loader(name)`` gives a column."""

    def __init__(self, loader, names: Sequence[str]):
        super().__init__()
        self._loader = loader
        self._names = tuple(names)

    def __missing__(self, name):
        if name not in self._names:
            raise KeyError(name)
        col = self[name] = self._loader(name)
        return col

    def items(self):
        return ((k, self[k]) for k in self._names)

    def keys(self):
        return iter(self._names)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


BLOCK_COLUMNS = RECORD_FIELDS + ("activity", "node", "payload_off", "payload_len")
