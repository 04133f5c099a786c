"""Sharded LMDB store.

A store is a directory: ``store.json`` (format, shard count) and
``shard-NNN/`` LMDB environments.  A batch goes to the shard chosen by a
hash of its (job, ring) so a ring's batches stay together and in order.
Per shard, three named databases:
  batches    batch key (24 B) -> frame
  summaries  batch key -> msgpack summary (record count, time range,
             task-id range, ranks, workflow ids, activity names, errors;
             max start "s1", min end "e0", node "host"):
             the index that lets queries skip whole batches
  workflows  workflow id (8 B big-endian) -> msgpack workflow document
Writes are idempotent (put with overwrite=False) and committed before
put_batches returns.  Env sync is left to the OS on commit (sync=False) and
forced at close: a killed process loses nothing committed; an OS crash may
lose the last commits, which the ring/spool upstream still hold until the
leader releases them.
"""
from __future__ import annotations

import json
import os
import zlib

import lmdb
import msgpack
import numpy as np

from flowcept.config import Option
from flowcept.native.batch import Batch
from flowcept.record.layout import FLAG_WORKFLOW, NODE_PREFIX, STATUS_ERROR
from flowcept.store import META, Store, write_meta

FORMAT = 1

OPTIONS = (
    Option("shards", int, 1, "LMDB environments of a new store (writes spread by ring)",
           range=(1, 4096)),
    Option("map_size", int, 1 << 36, "address space per shard (sparse)", range=(1 << 20, 1 << 44)),
)


def summarize(batch: Batch) -> dict:
    """The per-batch index entry.  Works on columns (no structured copies):
    this runs once per batch on the ingest path."""
    recs = batch.records
    flags = recs["flags"]
    is_wf = (flags & FLAG_WORKFLOW) != 0
    n_wf = int(np.count_nonzero(is_wf))

    def col(name):
        c = recs[name]
        return c[~is_wf] if n_wf else c

    n = len(recs) - n_wf
    summary = {"n": n, "nw": n_wf}
    if n:
        names = batch.strings
        start, end, tid, rank = col("start_ns"), col("end_ns"), col("task_id"), col("rank")
        acts = np.flatnonzero(np.bincount(col("activity_id"), minlength=1)).tolist()
        wf = col("workflow_id")
        summary.update(
            t0=int(start.min()), t1=int(end.max()), id0=int(tid.min()), id1=int(tid.max()),
            r0=int(rank.min()), r1=int(rank.max()),
            wf=[int(wf[0])] if (wf == wf[0]).all() else np.unique(wf).tolist(),
            act=[names[a] if a < len(names) else "" for a in acts],
            err=int(np.count_nonzero(col("status") == STATUS_ERROR)),
            # query index (issue #4): max start, min end, node of the batch
            s1=int(start.max()), e0=int(end.min()))
        if names and names[0].startswith(NODE_PREFIX):
            summary["host"] = names[0][len(NODE_PREFIX):]
    return summary


def workflow_docs(batch: Batch):
    """(workflow_id, doc) for each workflow record of the batch."""
    from flowcept.record.payload import decode
    for i in np.flatnonzero(batch.records["flags"] & FLAG_WORKFLOW).tolist():
        doc = decode(batch.payload_of(i))
        yield int(batch.records[i]["workflow_id"]), doc


class LmdbStore(Store):
    name = "lmdb"

    def __init__(self, path, config=None, readonly=False):
        super().__init__(path, config, readonly)
        self.path = path
        meta_path = os.path.join(path, META)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: store format {meta.get('format')} is not {FORMAT}; "
                                 "use the flowcept version that wrote it")
            shards = meta["shards"]
        elif readonly:
            raise FileNotFoundError(f"{path}: no flowcept store here (store.json missing)")
        else:
            shards = config.lmdb_shards if config else 1
            os.makedirs(path, mode=0o700, exist_ok=True)
            write_meta(path, store=self.name, format=FORMAT, shards=shards)
        map_size = config.lmdb_map_size if config else 1 << 36
        self._txns = {}   # shard -> open write transaction (stage/commit_staged)
        self.envs = []
        for i in range(shards):
            shard = os.path.join(path, f"shard-{i:03d}")
            if not readonly:
                os.makedirs(shard, mode=0o700, exist_ok=True)
            env = lmdb.open(shard, map_size=map_size, max_dbs=4, readonly=readonly,
                            sync=False, metasync=False, mode=0o600,
                            readahead=False)
            dbs = {n: env.open_db(n.encode(), create=not readonly)
                   for n in ("batches", "summaries", "workflows")}
            self.envs.append((env, dbs))

    def _shard(self, key: bytes) -> int:
        return zlib.crc32(key[:16]) % len(self.envs)

    def stage(self, key: bytes, frame) -> int:
        """Writes a frame into the shard's open write transaction (LMDB copies
        it, so the caller may reuse its buffer); commit_staged() makes it
        durable.  Returns 1 if new, 0 if the key was already stored."""
        shard = self._shard(key)
        txn = self._txns.get(shard)
        env, dbs = self.envs[shard]
        if txn is None:
            txn = self._txns[shard] = env.begin(write=True)
        if not txn.put(key, frame, db=dbs["batches"], overwrite=False):
            return 0  # already stored: redelivery
        batch = Batch(frame, check=False)
        txn.put(key, msgpack.packb(summarize(batch)), db=dbs["summaries"])
        for wf, doc in workflow_docs(batch):
            wkey = wf.to_bytes(8, "big")
            old = txn.get(wkey, db=dbs["workflows"])
            merged = {**msgpack.unpackb(old, raw=False), **doc} if old else doc
            txn.put(wkey, msgpack.packb(merged, use_bin_type=True), db=dbs["workflows"])
        return 1

    def commit_staged(self) -> None:
        txns, self._txns = self._txns, {}
        for txn in txns.values():
            txn.commit()

    def abort_staged(self) -> None:
        txns, self._txns = self._txns, {}
        for txn in txns.values():
            txn.abort()

    def has(self, key: bytes) -> bool:
        env, dbs = self.envs[self._shard(key)]
        with env.begin() as txn:
            return txn.get(key, db=dbs["batches"]) is not None

    def scan(self, keys=None, zero_copy=False):
        """(key, frame) for every batch, or for the given keys.  zero_copy:
        frames are views into the memory map, valid until the next item."""
        for env, dbs in self.envs:
            with env.begin(buffers=zero_copy) as txn:
                if keys is None:
                    for key, frame in txn.cursor(db=dbs["batches"]).iternext():
                        yield bytes(key), frame
                else:
                    for key in keys:
                        frame = txn.get(key, db=dbs["batches"])
                        if frame is not None:
                            yield key, frame

    def summaries(self):
        for env, dbs in self.envs:
            with env.begin() as txn:
                for key, raw in txn.cursor(db=dbs["summaries"]).iternext():
                    yield key, msgpack.unpackb(raw, raw=False)

    def workflows(self) -> dict:
        out = {}
        for env, dbs in self.envs:
            with env.begin() as txn:
                for key, raw in txn.cursor(db=dbs["workflows"]).iternext():
                    out.setdefault(int.from_bytes(key, "big"), {}).update(
                        msgpack.unpackb(raw, raw=False))
        return out

    def stats(self) -> dict:
        shards = []
        for i, (env, dbs) in enumerate(self.envs):
            with env.begin() as txn:
                entries = txn.stat(dbs["batches"])["entries"]
            info = env.info()
            shards.append({"shard": i, "batches": entries,
                           "bytes": info["last_pgno"] * env.stat()["psize"]})
        return {"path": self.path, "shards": shards}

    def close(self):
        self.abort_staged()   # never commit half a pass implicitly
        for env, _ in self.envs:
            if not self.readonly:
                env.sync(True)
            env.close()
        self.envs = []


BACKEND = LmdbStore
