"""MongoDB store (pymongo), in Flowcept's own collections and field names so
that existing Flowcept Mongo queries and dashboards keep working.

Server: the location a keeper names, else ``mongodb_url`` (Flowcept's
``databases.mongodb`` uri, or host and port, become it), else
127.0.0.1:27017.  Database: the URL's path (``mongodb://host:27017/flowcept``;
default ``mongodb_database``, Flowcept's ``databases.mongodb.db``).  Collections:
  tasks      one document per task record: task_id, workflow_id,
             campaign_id, activity_id, used, generated, started_at,
             ended_at (seconds), status, hostname, parent_task_id, tags,
             custom_metadata, error, plus rank, thread_id, start_ns, end_ns,
             node and job (the batch's job id, 16 hex digits); ``_id`` is
             deterministic (batch key + record index), so a redelivered
             batch inserts nothing new
  workflows  one document per workflow (``_id``: its 16 hex digits;
             ``workflow_id``: the id the caller gave, e.g. Flowcept's uuid,
             else the same hex), the workflow records merged as in LMDB
  batches    one document per stored batch frame (``_id`` = batch key
             hex): the commit marker that ``has()`` reads, its summary
             (the same index LMDB keeps) and, with ``mongodb_keep_frames``,
             the frame itself (``scan``: the archive can be compacted from
             MongoDB alone)
Indexes: tasks on workflow_id, activity_id, started_at, status, task_id.

A commit inserts tasks (bulk, unordered; duplicate-key errors from an
earlier, interrupted commit of the same batch are expected and skipped),
then upserts workflows, then the batch markers: a batch is marked stored only
once all its tasks are in, and a crash before the marker means the batch is
delivered again and completed.  There is no multi-document transaction: a
reader may see a batch's tasks before its marker.

campaign_id comes from the workflow document when the store has seen it
(tasks that arrive before their workflow record carry None).

Only the MongoDB wire protocol of nx-27017 was exercised here (no real
mongod can be installed on the development machines).
"""
from __future__ import annotations

import logging
import urllib.parse
from typing import Dict, List, Optional

import numpy as np

from flowcept.config import Option
from flowcept.errors import StoreError
from flowcept.osutil import redact_url as redact
from flowcept.native.batch import Batch
from flowcept.record.document import task_document
from flowcept.record.layout import FLAG_WORKFLOW, node_of
from flowcept.record.payload import FLAG_NAME_IN_PAYLOAD, split_name
from flowcept.store import Store

log = logging.getLogger("flowcept.store.mongodb")

MAX_FRAME = 15 << 20        # below MongoDB's 16 MiB document limit

OPTIONS = (
    Option("url", str, "", "the server: mongodb://[user:password@]host:port[/database] "
           "(\"\" = mongodb://127.0.0.1:27017); Flowcept's databases.mongodb uri, or host "
           "and port"),
    Option("database", str, "flowcept", "database when the URL names none"),
    Option("keep_frames", bool, True, "also keep each batch frame (scan, archive compaction)"),
    Option("timeout_ms", int, 5000, "server selection / connect timeout", range=(100, 600_000)),
    Option("write_concern", str, "majority", "w of every write: majority | 1 | 0 ...",
           check=lambda v: None if v.strip() else "must not be empty, e.g. 'majority'"),
)

TASK_INDEXES = ("workflow_id", "activity_id", "started_at", "status", "task_id")


def _pymongo():
    try:
        import pymongo
    except ImportError:
        raise StoreError("the mongodb store needs pymongo: pip install 'flowcept[mongodb]' "
                         "(or pip install pymongo)") from None
    return pymongo


def task_documents(key: bytes, batch: Batch) -> List[dict]:
    """The tasks documents of one batch (``flowcept.record.document``, as
    the readers build them), with deterministic ``_id``s, the node and the
    job.  Built from whole columns (the ingest path: numpy scalar access per
    field would cost more than the insert)."""
    recs = batch.records
    strings = batch.strings
    node = node_of(strings)
    job = f"{int(batch.header['job_id']):016x}"
    prefix = key.hex()
    rows = np.flatnonzero((recs["flags"] & FLAG_WORKFLOW) == 0)
    r = recs[rows]
    cols = {n: r[n].tolist() for n in ("workflow_id", "task_id", "parent_id", "status", "start_ns",
                                        "end_ns", "rank", "thread_id", "activity_id", "flags",
                                        "payload_off", "payload_len")}
    payload = batch.payload
    n_str = len(strings)
    out = []
    for j, i in enumerate(rows.tolist()):
        off, ln, flags = cols["payload_off"][j], cols["payload_len"][j], cols["flags"][j]
        data = bytes(payload[off:off + ln])
        name = None
        if flags & FLAG_NAME_IN_PAYLOAD:
            name, data = split_name(data, flags)
        if name is None:
            a = cols["activity_id"][j]
            name = strings[a] if a < n_str else ""
        doc = task_document(workflow_id=cols["workflow_id"][j], task_id=cols["task_id"][j],
                            parent_id=cols["parent_id"][j], status=cols["status"][j],
                            start_ns=cols["start_ns"][j], end_ns=cols["end_ns"][j],
                            rank=cols["rank"][j], thread_id=cols["thread_id"][j],
                            activity=name, hostname=node, payload=data, flags=flags)
        doc["_id"] = f"{prefix}:{i:08d}"     # sorts in record order
        doc["node"] = node
        doc["job"] = job
        out.append(doc)
    return out


def _mongo_safe(value):
    """Mongo refuses keys with '.' or a leading '$' and ints past 64 bits:
    those values are stored as text (queries on such keys cannot match
    anyway)."""
    if isinstance(value, dict):
        return {(str(k).replace(".", "\uff0e") if "." in str(k) or str(k).startswith("$")
                 else str(k)): _mongo_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mongo_safe(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < (1 << 63):
        return str(value)
    return value


_SUMMARY_INTS = ("n", "nw", "t0", "t1", "id0", "id1", "r0", "r1", "err", "s1", "e0")


def _summary_ints(summary: dict) -> dict:
    """A summary as LMDB keeps it: the ids past 63 bits that _mongo_safe
    stored as text are ints again (queries compare them with ints)."""
    for k in _SUMMARY_INTS:
        if isinstance(summary.get(k), str):
            summary[k] = int(summary[k])
    if "wf" in summary:
        summary["wf"] = [int(w) if isinstance(w, str) else w for w in summary["wf"]]
    return summary


class MongoStore(Store):
    name = "mongodb"
    location_kind = "url"

    def __init__(self, url, config=None, readonly=False):
        super().__init__(url, config, readonly)
        pymongo = _pymongo()
        self.url = url or (config.mongodb_url if config else "") or "mongodb://127.0.0.1:27017"
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("mongodb", "mongodb+srv"):
            raise StoreError(f"store_url {redact(self.url)!r}: not a MongoDB URL; use "
                             "mongodb://[user:password@]host:27017/database")
        dbname = parts.path.strip("/") or (config.mongodb_database if config else "flowcept")
        timeout = config.mongodb_timeout_ms if config else 5000
        w = config.mongodb_write_concern if config else "majority"
        self.keep_frames = config.mongodb_keep_frames if config else True
        self.where = f"MongoDB at {redact(self.url)}"
        try:
            self.client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=timeout,
                                              connectTimeoutMS=timeout)
            self.client.admin.command("ping")
        except pymongo.errors.PyMongoError as e:
            raise StoreError(f"{self.where} is unreachable ({e.__class__.__name__}: "
                             f"{str(e)[:200]}); start mongod there or fix store_url") from None
        from pymongo.write_concern import WriteConcern
        wc = WriteConcern(w=int(w) if w.isdigit() else w)
        try:
            self.db = self.client.get_database(dbname, write_concern=wc)
        except Exception:     # servers without majority support fall back to the URL's default
            self.db = self.client[dbname]
        self.tasks = self.db["tasks"]
        self.workflows_c = self.db["workflows"]
        self.batches = self.db["batches"]
        self._staged: Dict[bytes, tuple] = {}
        self._campaigns: Dict[str, Optional[str]] = {}
        if not readonly:
            try:
                for f in TASK_INDEXES:
                    self.tasks.create_index(f)
                self.workflows_c.create_index("campaign_id")
            except pymongo.errors.PyMongoError as e:
                raise StoreError(f"{self.where}: cannot create indexes ({e}); check the user's "
                                 "roles (readWrite + createIndex on the database)") from None

    # -- writing -------------------------------------------------------
    def stage(self, key: bytes, frame) -> int:
        key = bytes(key)
        if key in self._staged or self.has(key):
            return 0
        from flowcept.store.summary import summarize, workflow_docs
        batch = Batch(frame, check=False)
        summary = summarize(batch)
        wfs = list(workflow_docs(batch))
        tasks = task_documents(key, batch)
        keep = bytes(frame) if self.keep_frames and len(frame) <= MAX_FRAME else None
        if self.keep_frames and keep is None:
            log.warning("%s: batch %s is %d bytes, over the document limit: its tasks are stored, "
                        "its frame is not (scan skips it)", self.where, key.hex(), len(frame))
        self._staged[key] = (tasks, wfs, summary, keep, int(batch.header["job_id"]))
        return 1

    def _campaign(self, wf_hex: str, staged_wfs: dict, asked: set):
        """The workflow's campaign_id: asked of the server at most once per
        workflow and commit (later commits ask again while it is unknown)."""
        if wf_hex in staged_wfs and staged_wfs[wf_hex].get("campaign_id") is not None:
            return staged_wfs[wf_hex]["campaign_id"]
        if self._campaigns.get(wf_hex) is None and wf_hex not in asked:
            asked.add(wf_hex)
            doc = self.workflows_c.find_one({"_id": wf_hex}, {"campaign_id": 1})
            self._campaigns[wf_hex] = doc.get("campaign_id") if doc else None
        return self._campaigns.get(wf_hex)

    def commit_staged(self) -> None:
        staged, self._staged = self._staged, {}
        if not staged:
            return
        pymongo = _pymongo()
        from bson.binary import Binary
        wf_docs: Dict[str, dict] = {}
        for _key, (_t, wfs, _s, _f, _j) in staged.items():
            for wf, doc in wfs:
                wf_docs.setdefault(f"{wf:016x}", {}).update(doc)
        try:
            for hx, doc in wf_docs.items():
                fields = _mongo_safe(doc)
                if not isinstance(fields.get("workflow_id"), str):
                    fields.pop("workflow_id", None)
                self.workflows_c.update_one({"_id": hx}, {"$set": fields}, upsert=True)
                # the caller's id (Flowcept's uuid) once given, else the hex form
                self.workflows_c.update_one({"_id": hx, "workflow_id": {"$exists": False}},
                                            {"$set": {"workflow_id": hx}})
                if doc.get("campaign_id") is not None:
                    self._campaigns[hx] = doc["campaign_id"]
            docs, asked = [], set()
            for _key, (tasks, _w, _s, _f, _j) in staged.items():
                for t in tasks:
                    t["campaign_id"] = self._campaign(t["workflow_id"], wf_docs, asked)
                    docs.append(_mongo_safe(t))
            if docs:
                try:
                    self.tasks.insert_many(docs, ordered=False)
                except pymongo.errors.BulkWriteError as e:
                    bad = [x for x in e.details.get("writeErrors", []) if x.get("code") != 11000]
                    if bad:
                        raise StoreError(f"{self.where}: {len(bad)} task inserts failed "
                                         f"({bad[0].get('errmsg')})") from None
            markers = []
            for key, (tasks, _w, summary, frame, job) in staged.items():
                m = {"_id": key.hex(), "key": Binary(key), "summary": _mongo_safe(summary),
                     "n": summary.get("n", 0), "job": f"{job:016x}"}
                if frame is not None:
                    m["frame"] = Binary(frame)
                markers.append(pymongo.ReplaceOne({"_id": m["_id"]}, m, upsert=True))
            self.batches.bulk_write(markers, ordered=False)
        except pymongo.errors.PyMongoError as e:
            raise StoreError(f"{self.where}: commit failed ({e.__class__.__name__}: "
                             f"{str(e)[:200]}); the batches stay pending and are retried") from None

    def abort_staged(self) -> None:
        self._staged = {}

    # -- reading -------------------------------------------------------
    def has(self, key: bytes) -> bool:
        return self.batches.find_one({"_id": bytes(key).hex()}, {"_id": 1}) is not None

    def scan(self, keys=None, zero_copy=False):
        want = None if keys is None else [bytes(k).hex() for k in keys]
        flt = {} if want is None else {"_id": {"$in": want}}
        for doc in self.batches.find(flt, {"frame": 1}).sort("_id", 1):
            frame = doc.get("frame")
            if frame is not None:
                yield bytes.fromhex(doc["_id"]), bytes(frame)

    def summaries(self):
        for doc in self.batches.find({}, {"summary": 1}).sort("_id", 1):
            yield bytes.fromhex(doc["_id"]), _summary_ints(doc.get("summary") or {})

    def find_tasks(self, cond: Optional[dict] = None, limit: Optional[int] = None, sort=None,
                   projection: Optional[dict] = None) -> List[dict]:
        """Task documents matching a Mongo-style filter, evaluated by the
        server (readers with a filter call this instead of scanning frames).
        Storage order (batch key, then record order) unless ``sort``."""
        cursor = self.tasks.find(cond or {}, projection or {"_id": 0})
        cursor = cursor.sort(sort or [("_id", 1)])
        if limit:
            cursor = cursor.limit(int(limit))
        return list(cursor)

    def workflows(self) -> dict:
        out = {}
        for doc in self.workflows_c.find({}):
            hx = doc.pop("_id")
            if doc.get("workflow_id") == hx:
                doc.pop("workflow_id")
            out[int(hx, 16)] = doc
        return out

    def stats(self) -> dict:
        return {"url": redact(self.url), "database": self.db.name,
                "batches": self.batches.count_documents({}),
                "tasks": self.tasks.count_documents({}),
                "workflows": self.workflows_c.count_documents({})}

    def close(self) -> None:
        self.abort_staged()
        c, self.client = getattr(self, "client", None), None
        if c is not None:
            c.close()


BACKEND = MongoStore
