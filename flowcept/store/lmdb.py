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
put_batches returns.

Several writers (keepers, a keeper and a ``flowcept recover``) may share one
store.  LMDB has one write lock per shard, so a writer holding shard 1 while
waiting for shard 0 and another holding 0 while waiting for 1 would wait
forever.  A writer therefore takes shard locks in ascending order only:
``put_batches`` stages its items shard by shard, and a ``stage`` into a
lower shard than one already open first commits what is open (commits were
never atomic across shards; a batch is idempotent on its own).  Env sync is left to the OS on commit (sync=False) and
forced at close: a killed process loses nothing committed; an OS crash may
lose the last commits, which the ring/spool upstream still hold until the
leader releases them.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import zlib

import lmdb
import msgpack

from flowcept.config import Option
from flowcept.errors import StoreError
from flowcept.native.batch import Batch
from flowcept.record.payload import PayloadError, decode_map
from flowcept.store import META, Store, write_meta
from flowcept.store.summary import summarize, workflow_docs

log = logging.getLogger("flowcept.store.lmdb")

FORMAT = 1

OPTIONS = (
    Option("shards", int, 1, "LMDB environments of a new store (writes spread by ring)",
           range=(1, 4096)),
    Option("map_size", int, 1 << 36, "address space per shard (sparse)", range=(1 << 20, 1 << 44)),
)


def _free_bytes(path: str):
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _stored_doc(raw, where: str) -> dict:
    """A stored workflow document (int keys and all); a damaged one is
    replaced by the next write, with a warning, rather than blocking it."""
    if raw is None:
        return {}
    try:
        return decode_map(raw)
    except PayloadError as e:
        log.warning("%s: stored workflow document does not decode (%s); replacing it", where, e)
        return {}


class _SharedEnvs:
    """Read-only environments shared by every reader of a store in this
    process: LMDB allows one environment per file per process (py-lmdb
    refuses a second), and readers (queries, compaction, metrics) open the
    same store side by side.  Counted; closed by the last reader."""

    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.open: dict = {}   # real path -> [envs, count]

    def get(self, path, make):
        key = os.path.realpath(path)
        with self.lock:
            held = self.open.get(key)
            if held is None:
                held = self.open[key] = [make(), 0]
            held[1] += 1
            return held[0]

    def release(self, path) -> bool:
        """True when the caller was the last reader (it closes the environments)."""
        key = os.path.realpath(path)
        with self.lock:
            held = self.open.get(key)
            if held is None:
                return True
            held[1] -= 1
            if held[1] > 0:
                return False
            del self.open[key]
            return True


_SHARED = _SharedEnvs()


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
        self.early_commits = 0   # commits forced by a stage into a lower shard
        self.envs = []
        self._shared = False
        if readonly:
            self.envs = _SHARED.get(path, lambda: self._open_envs(path, shards, map_size, True))
            self._shared = True
        else:
            self.envs = self._open_envs(path, shards, map_size, False)

    def _open_envs(self, path, shards, map_size, readonly):
        envs = []
        for i in range(shards):
            shard = os.path.join(path, f"shard-{i:03d}")
            if not readonly:
                os.makedirs(shard, mode=0o700, exist_ok=True)
            try:
                env = lmdb.open(shard, map_size=map_size, max_dbs=4, readonly=readonly,
                                sync=False, metasync=False, mode=0o600,
                                readahead=False)
                dbs = {n: env.open_db(n.encode(), create=not readonly)
                       for n in ("batches", "summaries", "workflows")}
            except lmdb.Error as e:
                for env, _ in envs:
                    env.close()
                raise self._error(f"open {shard}", e) from None
            envs.append((env, dbs))
        return envs

    def _shard(self, key: bytes) -> int:
        return zlib.crc32(key[:16]) % len(self.envs)

    def stage(self, key: bytes, frame) -> int:
        """Writes a frame into the shard's open write transaction (LMDB copies
        it, so the caller may reuse its buffer); commit_staged() makes it
        durable.  Returns 1 if new, 0 if the key was already stored.
        Raises ValueError, before writing anything, for contents that cannot
        be stored (a workflow record that is not a msgpack map, a name
        prefix that is not well-formed), and StoreError for a failing
        write."""
        shard = self._shard(key)
        env, dbs = self.envs[shard]
        txn = self._txns.get(shard)
        if txn is None and self._txns and max(self._txns) > shard:
            # taking a lower shard's lock while holding a higher one could
            # deadlock against another writer: let the higher ones go first
            self.commit_staged()
            self.early_commits += 1
        try:
            if txn is None:
                txn = self._txns[shard] = env.begin(write=True)
            if txn.get(key, db=dbs["batches"]) is not None:
                return 0  # already stored: redelivery
        except lmdb.Error as e:
            raise self._error("begin", e) from None
        # everything that can fail on contents, before the first write
        batch = Batch(frame, check=False)
        summary = msgpack.packb(summarize(batch))
        merged = {}
        for wf, doc in workflow_docs(batch):
            wkey = wf.to_bytes(8, "big")
            if wkey not in merged:
                try:
                    old = txn.get(wkey, db=dbs["workflows"])
                except lmdb.Error as e:
                    raise self._error("read", e) from None
                merged[wkey] = _stored_doc(old, self.path)
            merged[wkey].update(doc)
        packed = {}
        for wkey, doc in merged.items():
            try:
                packed[wkey] = msgpack.packb(doc, use_bin_type=True)
            except Exception as e:
                raise PayloadError(f"workflow {wkey.hex()}: cannot re-encode the merged document "
                                   f"({type(e).__name__}: {e})") from None
        try:
            txn.put(key, frame, db=dbs["batches"])
            txn.put(key, summary, db=dbs["summaries"])
            for wkey, data in packed.items():
                txn.put(wkey, data, db=dbs["workflows"])
        except lmdb.Error as e:
            raise self._error("write", e) from None
        return 1

    def put_batches(self, items) -> int:
        """Stages shard by shard in ascending order (one commit per shard),
        then commits: see the module docstring on lock order."""
        items = list(items)
        if len(self.envs) > 1:
            items.sort(key=lambda item: self._shard(item[0]))
        return super().put_batches(items)

    def _error(self, what: str, e: Exception) -> StoreError:
        """The StoreError for an LMDB failure: names the store and the fix."""
        text = str(e)
        if isinstance(e, lmdb.MapFullError) or "MDB_MAP_FULL" in text:
            size = self.config.lmdb_map_size if self.config else 1 << 36
            return StoreError(errno.ENOSPC, f"store {self.path}: LMDB map full ({what}: {text}); "
                              f"raise lmdb_map_size (now {size} bytes; setting lmdb_map_size or "
                              "FLOWCEPT_LMDB_MAP_SIZE) and restart the keeper")
        code = getattr(e, "errno", None)
        if isinstance(e, lmdb.DiskError) or code == errno.ENOSPC or "No space left" in text:
            return StoreError(errno.ENOSPC, f"store {self.path}: disk full ({what}: {text}); free "
                              f"space on {self.path}'s file system")
        if code == errno.EIO or "Input/output error" in text:
            # LMDB reports a full disk at commit as EIO: tell the two apart
            free = _free_bytes(self.path)
            if free is not None and free < 4 << 20:
                return StoreError(errno.ENOSPC, f"store {self.path}: disk full ({what}: {text}; "
                                  f"{free} bytes left); free space on {self.path}'s file system")
            return StoreError(errno.EIO, f"store {self.path}: I/O error ({what}: {text}); the "
                              f"file system of {self.path} is full or failing: free space on it "
                              "or check the device")
        return StoreError(code or errno.EIO, f"store {self.path}: {what} failed "
                          f"({type(e).__name__}: {text})")

    def commit_staged(self) -> None:
        txns, self._txns = self._txns, {}
        order = [txns[i] for i in sorted(txns)]
        for i, txn in enumerate(order):
            try:
                txn.commit()
            except lmdb.Error as e:
                for rest in order[i + 1:]:
                    rest.abort()
                raise self._error("commit", e) from None

    def abort_staged(self) -> None:
        txns, self._txns = self._txns, {}
        for txn in txns.values():
            try:
                txn.abort()
            except lmdb.Error:
                pass

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
                    yield key, msgpack.unpackb(raw, raw=False, strict_map_key=False)

    def workflows(self) -> dict:
        out = {}
        for env, dbs in self.envs:
            with env.begin() as txn:
                for key, raw in txn.cursor(db=dbs["workflows"]).iternext():
                    out.setdefault(int.from_bytes(key, "big"), {}).update(
                        _stored_doc(raw, self.path))
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
        envs, self.envs = self.envs, []
        if not envs or (self._shared and not _SHARED.release(self.path)):
            return
        for env, _ in envs:
            if not self.readonly:
                env.sync(True)
            env.close()


BACKEND = LmdbStore
