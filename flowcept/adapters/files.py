"""Watch files under chosen paths: created / modified / moved / deleted
files become data-entity records (activity ``file:<event>``) with path,
size, mtime and, optionally, a content hash.

Two modes:

* ``mode="inotify"`` (default; watchdog's native observer): events mark
  paths dirty, and each ``poll()`` stats the dirty paths and compares them
  with the last snapshot, so the several kernel events of one write give one
  record.
* ``mode="polling"``: every pass rescans the trees.  Use it on parallel file
  systems: inotify (and fanotify) see only changes made through the local
  node's kernel, so on Lustre, GPFS, BeeGFS or NFS a file written by a
  process on another node produces no event at all; polling sees every
  change the metadata server reports, at the cost of a tree walk per pass.

Restart: the snapshot (path -> size, mtime, inode) is the checkpoint.  At
``start()`` the trees are rescanned and compared with it, so what changed
while the adapter was down is emitted once, and nothing seen before is
emitted again.  A first start takes the existing files as a baseline
(``include_existing=True`` emits them as ``file:present``).

Link to captured tasks: each record carries ``mtime_ns`` and the host;
``generated_by(tasks, files)`` assigns a file to the innermost captured task
of the same host whose [start, end] contains its mtime (PROV
``wasGeneratedBy``; within a scheduler tick of slack, as the kernel's mtime
clock is coarse), at read time, since the adapter thread cannot see which
task another thread is running.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Dict, Iterable, Iterator, List, Optional

from flowcept.adapters.base import Adapter, Item
from flowcept.errors import ConfigError

from flowcept.config import Option

# settings keys <adapter>_<name> (file, FLOWCEPT_* environment, Flowcept(...) keywords)
OPTIONS = (
    Option("paths", str, "", "directories to watch, separated by os.pathsep"),
    Option("mode", str, "inotify", "inotify (local file systems) or polling (Lustre, GPFS, NFS)", choices=("inotify", "polling")),
    Option("hash", str, "", "content hash of created/modified files (e.g. sha256; \"\" = none)"),
    Option("poll_interval", float, 1.0, "seconds between passes", range=(0, 86400)),
    Option("checkpoint", str, "", "checkpoint file (\"\" = <run_dir>/adapters/files-<hash>.json)"),
)


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class FilesAdapter(Adapter):
    name = "files"

    def __init__(self, session=None, *, paths, mode: str = "inotify", hash: Optional[str] = None,
                 hash_max_bytes: int = 64 << 20, include_existing: bool = False,
                 ignore_suffixes=(".tmp", ".swp", "~"), **kw):
        super().__init__(session, **kw)
        paths = [p for p in paths.split(os.pathsep) if p] if isinstance(paths, str) else list(paths)
        if not paths:
            raise ConfigError("files adapter: give at least one PATH to watch")
        self.paths = [os.path.abspath(p) for p in paths]
        for p in self.paths:
            if not os.path.isdir(p):
                raise ConfigError(f"files adapter: {p} is not a directory; create it or fix the path")
        if mode not in ("inotify", "polling"):
            raise ConfigError(f"files adapter: mode must be inotify or polling (got {mode!r})")
        if hash is not None and hash not in hashlib.algorithms_available:
            raise ConfigError(f"files adapter: unknown hash {hash!r}; use e.g. sha256 or blake2b")
        self.mode = mode
        self.hash = hash
        self.hash_max_bytes = int(hash_max_bytes)
        self.include_existing = include_existing
        self.ignore_suffixes = tuple(ignore_suffixes or ())
        self._dirty: set = set()
        self._dirty_lock = threading.Lock()
        self._checked: set = set()
        self._pending: list = []
        self._observer = None

    def source_key(self) -> str:
        return "files:" + ":".join(sorted(self.paths))

    # -- source -----------------------------------------------------------
    def open(self) -> None:
        first = "snapshot" not in self.position
        self.position.setdefault("snapshot", {})
        if first and not self.include_existing:
            self.position["snapshot"] = {p: s for p, s in self._scan().items()}
            self.save_checkpoint()
        else:
            self._pending = list(self._diff(self._scan(), full=True, initial=first))
        if self.mode == "inotify":
            self._start_observer()

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            raise ConfigError("files adapter: watchdog is not installed; "
                              "pip install 'flowcept[files]' or use mode='polling'") from None
        adapter = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                with adapter._dirty_lock:
                    adapter._dirty.add(os.fsdecode(event.src_path))
                    dest = getattr(event, "dest_path", None)
                    if dest:
                        adapter._dirty.add(os.fsdecode(dest))

        self._observer = Observer()
        for p in self.paths:
            self._observer.schedule(_Handler(), p, recursive=True)
        self._observer.start()

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # -- diffing ----------------------------------------------------------
    def _ignored(self, path: str) -> bool:
        return path.endswith(self.ignore_suffixes) or os.path.basename(path).startswith(".#")

    def _scan(self, roots: Optional[Iterable[str]] = None) -> Dict[str, list]:
        out: Dict[str, list] = {}
        for root in roots or self.paths:
            for d, _dirs, files in os.walk(root):
                for f in files:
                    p = os.path.join(d, f)
                    if self._ignored(p):
                        continue
                    s = _stat(p)
                    if s is not None:
                        out[p] = s
        return out

    def _diff(self, seen: Dict[str, list], full: bool, initial: bool = False,
              under: Iterable[str] = ()) -> Iterator[Item]:
        """Items for the differences between seen and the snapshot; full: a
        path of the snapshot absent from seen is deleted; under: with full
        False, only paths below these directories count as absent."""
        snap = self.position["snapshot"]
        if full:
            gone = [p for p in snap if p not in seen]
        else:
            roots = tuple(r.rstrip(os.sep) + os.sep for r in under)
            gone = [p for p in snap if p not in seen and (p in self._checked or p.startswith(roots))]
        by_ino = {snap[p][2]: p for p in gone}
        now = time.time_ns()
        for p, s in sorted(seen.items()):
            old = snap.get(p)
            if old is not None and old[0] == s[0] and old[1] == s[1]:
                continue
            moved_from = by_ino.pop(s[2], None) if old is None else None
            if moved_from is not None:
                gone.remove(moved_from)
                event = "moved"
            else:
                event = "present" if initial else ("modified" if old is not None else "created")
            yield self._item(event, p, s, now, moved_from)
            # the snapshot advances only once the record is in the ring
            if moved_from is not None:
                snap.pop(moved_from, None)
            snap[p] = s
        for p in gone:
            yield self._item("deleted", p, snap[p], now, None)
            snap.pop(p, None)

    def _item(self, event: str, path: str, s: list, now: int, moved_from: Optional[str]) -> Item:
        size, mtime_ns = s[0], s[1]
        entity = {"path": path, "size": size, "mtime_ns": mtime_ns}
        if moved_from:
            entity["moved_from"] = moved_from
        if self.hash and event not in ("deleted",) and size <= self.hash_max_bytes:
            digest = self._digest(path)
            if digest:
                entity[self.hash] = digest
        when = now if event == "deleted" else mtime_ns
        meta = {"entity": "file", "event": event, "mode": self.mode}
        # one id per (event, path, version): an unchanged file is never emitted twice
        return Item(source_id=f"{event}:{path}:{size}:{mtime_ns}", activity=f"file:{event}",
                    start_ns=when, end_ns=when, generated=entity, custom_metadata=meta)

    def _digest(self, path: str) -> Optional[str]:
        h = hashlib.new(self.hash)
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return None
        return h.hexdigest()

    def read_new(self) -> Iterator[Item]:
        pending, self._pending = getattr(self, "_pending", []), []
        yield from pending
        if self.mode == "polling":
            yield from self._diff(self._scan(), full=True)
            return
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        seen: Dict[str, list] = {}
        dirs: List[str] = []
        self._checked = set()
        for p in dirty:
            if os.path.isdir(p):
                dirs.append(p)
                seen.update(self._scan([p]))
            elif not self._ignored(p):
                self._checked.add(p)
                s = _stat(p)
                if s is not None:
                    seen[p] = s
        # a directory that vanished or moved: everything known below it is checked too
        snap = self.position["snapshot"]
        for p in dirty:
            if not os.path.exists(p):
                prefix = p.rstrip(os.sep) + os.sep
                for q in list(snap):
                    if q.startswith(prefix):
                        self._checked.add(q)
                        s = _stat(q)
                        if s is not None:
                            seen[q] = s
        yield from self._diff(seen, full=False, under=dirs)


def generated_by(tasks: List[dict], files: List[dict], slack_ns: int = 10_000_000) -> Dict[str, str]:
    """file record task_id -> task_id of the captured task that wrote it:
    the innermost task of the same host whose [start, end] holds the file's
    mtime (PROV wasGeneratedBy).  The kernel stamps mtime from a coarse clock
    that lags the one tasks are timed with by up to a scheduler tick (1-10
    ms), so when no task holds the mtime exactly, the task whose span is
    nearest within ``slack_ns`` is taken.  tasks and files as read_tasks
    returns them."""
    spans = sorted(((t["start_ns"], t["end_ns"], t["hostname"], t["task_id"]) for t in tasks
                    if not str(t.get("activity_id", "")).startswith("file:")),
                   key=lambda s: s[1] - s[0])
    out: Dict[str, str] = {}
    for f in files:
        g = f.get("generated") or {}
        m = g.get("mtime_ns")
        if m is None or f.get("activity_id") == "file:deleted":
            continue
        near, best = None, slack_ns + 1
        for start, end, host, tid in spans:
            if host != f.get("hostname"):
                continue
            if start <= m <= end:
                near = tid
                break
            gap = start - m if m < start else m - end
            if gap < best:
                near, best = tid, gap
        if near is not None:
            out[f["task_id"]] = near
    return out
