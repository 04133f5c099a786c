"""Reading records back from stores (LMDB, MongoDB, ...) as numpy arrays or
dicts, through the one read path (``flowcept.query.frames`` decodes,
``flowcept.query.engine`` reads, ``flowcept.query.documents`` shapes).

A payload is decoded only when its record's flags say msgpack; C API
payloads are opaque and come back as bytes (``doc["payload"]``).  A payload
flagged msgpack that does not decode never stops a read: the task keeps its
raw bytes (``payload``) and ``payload_error``, and it is counted
(``stats["payload_errors"]``).  A record whose activity name did not fit in
its ring's string table carries the name in front of its payload: it is
named from there and the prefix is stripped.  A batch found in several
store directories under the path is read once."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from flowcept.native.batch import Batch
from flowcept.record.document import task_document
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, RECORD_DTYPE
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD, split_name

log = logging.getLogger("flowcept.query")


def find_stores(path: str) -> List[str]:
    """Every store directory at or below path (a run dir, a job dir, a store)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
        if head == b"\x89HDF\r\n\x1a\n":
            raise FileNotFoundError(
                f"{path!r} is an HDF5 archive, not a run directory: open it with "
                f"flowcept.archive.open({path!r}) (.query().to_list()) or `flowcept report {path}`")
    if os.path.isfile(os.path.join(path, "store.json")):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        if "store.json" in files:
            found.append(root)
            dirs[:] = []
        dirs.sort()
    if not found:
        raise FileNotFoundError(f"no flowcept store under {path!r} (looked for store.json); "
                                "pass a run directory such as ./flowcept-runs/<job>")
    return found


def open_stores(path: str) -> list:
    """Every store at or below path, opened read-only (close them, or the table)."""
    from flowcept.store import open_store_at
    stores = []
    try:
        for sp in find_stores(path):
            stores.append(open_store_at(sp))
    except BaseException:
        for st in stores:
            st.close()
        raise
    return stores


def store_table(path: str):
    """The read path's table (``flowcept.query.engine.StoreTable``) of every
    store at or below path: a batch in several stores is read once."""
    from flowcept.query.engine import StoreTable
    return StoreTable(open_stores(path))


def iter_batches(path: str) -> Iterator[Batch]:
    """Every batch under path once (a batch id in several stores: the first)."""
    from flowcept.store import open_store_at
    seen = set()
    for sp in find_stores(path):
        with open_store_at(sp) as st:
            for key, frame in st.scan():
                if bytes(key) in seen:
                    continue
                seen.add(bytes(key))
                yield Batch(frame, check=False)


@dataclass
class Records:
    """Task records of a store, columnar: ``records`` (RECORD_DTYPE) plus
    per-record activity name, node and payload bytes.  A record that carried
    its activity name in its payload is named from it, and its payload here
    is its own, without the prefix (FLAG_NAME_IN_PAYLOAD cleared)."""
    records: np.ndarray
    activity: np.ndarray
    node: np.ndarray
    payloads: List[bytes]

    def __len__(self):
        return len(self.records)


def records_of_blocks(blocks) -> Records:
    """Records of blocks (``flowcept.query.frames.Block``), concatenated."""
    recs, acts, nodes, pays = [], [], [], []
    for block in blocks:
        c = block.cols
        r = np.zeros(block.n, RECORD_DTYPE)
        for f in ("task_id", "parent_id", "workflow_id", "start_ns", "end_ns", "rank",
                  "thread_id", "status", "flags", "payload_len"):
            r[f] = c[f]
        raw = c.get("activity_id")
        r["activity_id"] = c["activity"] if raw is None else raw
        r["payload_off"] = 0
        recs.append(r)
        acts.append(block.names("activity"))
        nodes.append(block.names("node"))
        pays.extend(block.payloads(np.arange(block.n)))
    if not recs:
        return Records(np.zeros(0, RECORD_DTYPE), np.zeros(0, object), np.zeros(0, object), [])
    return Records(np.concatenate(recs), np.concatenate(acts), np.concatenate(nodes), pays)


def read_records(path: str) -> Records:
    """Every task record under path (a batch in several stores read once), in
    store order.  ``activity_id`` of a record here is its code in its batch's
    table; use ``activity`` for names."""
    table = store_table(path)
    try:
        return records_of_blocks(b for _r, b in table.blocks(table.refs()))
    finally:
        table.close()


def named_payload(payload: bytes, flags: int, activity: str):
    """(activity name, own payload) of a record: the name from the payload
    prefix when the record carries one (FLAG_NAME_IN_PAYLOAD)."""
    name, rest = split_name(payload, flags)
    return (activity, payload) if name is None else (name, bytes(rest))


def record_flags(rec) -> int:
    """The flags of a record (a RECORD_DTYPE row or a dict); a record
    without them (older callers) is taken as msgpack."""
    try:
        return int(rec["flags"])
    except (KeyError, IndexError, ValueError, TypeError):
        return FLAG_PAYLOAD_MSGPACK


def task_dict(rec, activity: str, node: str, payload: bytes, job: Optional[str] = None,
              stats: Optional[dict] = None) -> dict:
    """A Flowcept-style task document (``flowcept.record.document``) of a
    record row (or a dict of its fields).  ``payload`` is the record's own
    payload (name prefix already stripped); ``stats["payload_errors"]``
    counts payloads flagged msgpack that do not decode."""
    return task_document(workflow_id=int(rec["workflow_id"]), task_id=int(rec["task_id"]),
                         parent_id=int(rec["parent_id"]), status=int(rec["status"]),
                         start_ns=int(rec["start_ns"]), end_ns=int(rec["end_ns"]),
                         rank=int(rec["rank"]), thread_id=int(rec["thread_id"]),
                         activity=activity, hostname=node, payload=payload,
                         flags=record_flags(rec), stats=stats)


def read_tasks(path: str, stats: Optional[dict] = None) -> List[dict]:
    """Every task record under path as a Flowcept-style dict, in start order
    (then task id).  ``stats`` (optional dict) receives ``payload_errors``:
    payloads flagged msgpack that did not decode (those tasks keep their raw
    bytes)."""
    from flowcept.query.documents import DEFAULT_SORT
    from flowcept.query.engine import stream
    st = {"payload_errors": 0}
    table = store_table(path)
    try:
        out = [d for part in stream(table, None, DEFAULT_SORT, stats=st) for d in part]
    finally:
        table.close()
    if st["payload_errors"]:
        log.warning("%s: %d task payload(s) flagged msgpack do not decode; kept as raw bytes "
                    "(field 'payload')", path, st["payload_errors"])
    if stats is not None:
        stats.update(st)
    return out


def read_workflows(path: str) -> Dict[str, dict]:
    from flowcept.store import open_store_at
    out: Dict[str, dict] = {}
    for sp in find_stores(path):
        with open_store_at(sp) as st:
            for wf, doc in st.workflows().items():
                out.setdefault(f"{wf:016x}", {}).update(doc)
    return out
