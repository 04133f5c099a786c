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

Moves.  A file is recorded as ``moved`` (with ``moved_from``) only when it
is the same file under a new name.  While the adapter runs in inotify mode,
that is what the kernel's move events say (watchdog pairs them), and
nothing else pairs a deletion with a creation: ext4 hands a deleted file's
inode number to the next new file at once, so ``rm old; echo > new`` is a
deletion and a creation, never a move.  Where no move events exist (polling
mode, and changes made while the adapter was down) a vanished and a new
path are paired when the file's identity matches: device, inode, size,
mtime to the nanosecond and, where the file system keeps one (ext4, XFS,
Btrfs: ``FS_IOC_GETVERSION``), the inode's generation number, which changes
when an inode number is reused.  Without generation numbers (tmpfs, most
network file systems) a new file that took a deleted file's inode number
with the same size and the same mtime would still be taken for a move.

File names that are not UTF-8 (Linux allows any bytes but ``/`` and NUL)
are recorded: ``path`` (and ``moved_from``) shows each undecodable byte as
``\\xNN``, and ``path_bytes_b64`` (``moved_from_bytes_b64``) holds the
exact name, base64-encoded, so no two names share a record.

Restart: the snapshot (path -> size, mtime, inode, device, generation) is
the checkpoint, and it advances for each change only once the change's
record is in the ring (``flowcept.adapters.base``).  At ``start()`` the
trees are rescanned and compared with it, so what changed while the
adapter was down is emitted once, and nothing seen before is emitted
again.  A first start takes the existing files as a baseline
(``include_existing=True`` emits them as ``file:present``).

Link to captured tasks: each record carries ``mtime_ns`` and the host;
``generated_by(tasks, files)`` assigns a file to the innermost captured task
of the same host whose [start, end] contains its mtime (PROV
``wasGeneratedBy``; within a scheduler tick of slack, as the kernel's mtime
clock is coarse), at read time, since the adapter thread cannot see which
task another thread is running.
"""
from __future__ import annotations

import array
import base64
import fcntl
import hashlib
import itertools
import os
import stat as stat_mod
import threading
import time
from typing import Dict, Iterable, Iterator, List, Optional

from flowcept.adapters.base import Adapter, Item, text_of
from flowcept.config import Option
from flowcept.errors import ConfigError

# settings keys <adapter>_<name> (file, FLOWCEPT_* environment, Flowcept(...) keywords)
OPTIONS = (
    Option("paths", str, "", "directories to watch, separated by os.pathsep"),
    Option("mode", str, "inotify", "inotify (local file systems) or polling (Lustre, GPFS, NFS)", choices=("inotify", "polling")),
    Option("hash", str, "", "content hash of created/modified files (e.g. sha256; \"\" = none)"),
    Option("poll_interval", float, 1.0, "seconds between passes", range=(0, 86400)),
    Option("checkpoint", str, "", "checkpoint file (\"\" = <run_dir>/adapters/files-<hash>.json)"),
)

_FS_IOC_GETVERSION = 0x80087601   # _IOR('v', 1, long): the inode's generation number

# a snapshot entry: [size, mtime_ns, inode, device, generation or None]
SIZE, MTIME, INO, DEV, GEN = range(5)


def _generation(path: str) -> Optional[int]:
    """The inode's generation number, where the file system keeps one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETVERSION, buf, True)
        return int(buf[0]) & 0xFFFFFFFF
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(path: str) -> Optional[list]:
    """[size, mtime_ns, inode, device, None] of a regular file (generation
    filled in later, only for files that changed)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except (OSError, ValueError):
        return None
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, None]


def _same_version(old: list, new: list) -> bool:
    """The snapshot entry still describes the file: same size, mtime and inode."""
    return (old[SIZE] == new[SIZE] and old[MTIME] == new[MTIME]
            and old[INO:DEV + 1] == new[INO:len(old)][:DEV + 1 - INO])


def _same_file(old: list, new: list) -> bool:
    """new is old under another name (no move event to say so)."""
    if len(old) <= GEN or old[INO] != new[INO] or old[DEV] != new[DEV]:
        return False
    if old[SIZE] != new[SIZE] or old[MTIME] != new[MTIME]:
        return False
    return old[GEN] is None or new[GEN] is None or old[GEN] == new[GEN]


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
        # change notifications (inotify): path -> sequence number of its last event, and
        # kernel moves dest -> (src, sequence); a pass forgets only what it consumed
        self._events = itertools.count(1)
        self._dirty: Dict[str, int] = {}
        self._moves: Dict[str, tuple] = {}
        self._dirty_lock = threading.Lock()
        self._taken = 0
        self._rescan = False
        self._initial = False
        self._observer = None

    def source_key(self) -> str:
        return "files:" + ":".join(sorted(self.paths))

    # -- source -----------------------------------------------------------
    def open(self) -> None:
        first = "snapshot" not in self.position
        self.position.setdefault("snapshot", {})
        if self.mode == "inotify":   # before the scan: nothing written meanwhile escapes
            self._start_observer()
        if first and not self.include_existing:
            self.position["snapshot"] = self._with_generations(self._scan())
            self.save_checkpoint()
        else:   # what changed while down (or, first time, what is there) on the first pass
            self._rescan, self._initial = True, first

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
                src = os.fsdecode(event.src_path)
                dest = getattr(event, "dest_path", None)
                with adapter._dirty_lock:
                    n = next(adapter._events)
                    adapter._dirty[src] = n
                    if dest:
                        dest = os.fsdecode(dest)
                        adapter._dirty[dest] = n
                        if event.event_type == "moved":
                            adapter._moves[dest] = (src, n)

        self._observer = Observer()
        for p in self.paths:
            self._observer.schedule(_Handler(), p, recursive=True)
        self._observer.start()

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # -- scanning ---------------------------------------------------------
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

    def _with_generations(self, seen: Dict[str, list]) -> Dict[str, list]:
        for p, s in seen.items():
            s[GEN] = _generation(p)
        return seen

    # -- diffing ----------------------------------------------------------
    def _diff(self, seen: Dict[str, list], gone: List[str], moves: Dict[str, str],
              initial: bool = False) -> Iterator[Item]:
        """Items for the paths of seen that differ from the snapshot and for
        the snapshot's paths in gone (vanished).  moves: dest -> src, the
        kernel's move events (when there are any, nothing else pairs)."""
        snap = self.position["snapshot"]
        gone = sorted(p for p in gone if p in snap)
        gone_set = set(gone)
        now = time.time_ns()
        new, changed = [], []
        for p, s in sorted(seen.items()):
            old = snap.get(p)
            if old is not None and _same_version(old, s):
                continue
            s[GEN] = _generation(p)
            (changed if old is not None else new).append((p, s))
        # a path with another file under it may be a moved file too (mv b a over an old a)
        renamed = new + [(p, s) for p, s in changed if len(snap[p]) > DEV
                         and (snap[p][INO], snap[p][DEV]) != (s[INO], s[DEV])]
        paired: Dict[str, str] = {}
        if moves is not None:
            for p, s in renamed:
                src = moves.get(p)
                if src in gone_set and src not in paired.values() and snap[src][INO] == s[INO]:
                    paired[p] = src
        else:
            by_ino: Dict[tuple, List[str]] = {}
            for g in gone:
                e = snap[g]
                if len(e) > GEN:
                    by_ino.setdefault((e[INO], e[DEV]), []).append(g)
            for p, s in renamed:
                for g in by_ino.get((s[INO], s[DEV]), ()):
                    if g not in paired.values() and _same_file(snap[g], s):
                        paired[p] = g
                        break
        moved_src = set(paired.values())
        for p, s in new:
            src = paired.get(p)
            if src is not None:
                yield self._item("moved", p, s, now, src,
                                 [["del", ["snapshot", src]], ["set", ["snapshot", p], s]])
            else:
                yield self._item("present" if initial else "created", p, s, now, None,
                                 [["set", ["snapshot", p], s]])
        for p, s in changed:
            old = snap[p]
            src = paired.get(p)
            if src is not None:   # the old file under this name went; another came by a move
                yield self._item("deleted", p, old, now, None, [["del", ["snapshot", p]]])
                yield self._item("moved", p, s, now, src,
                                 [["del", ["snapshot", src]], ["set", ["snapshot", p], s]])
                continue
            replaced = len(old) > DEV and (old[INO], old[DEV]) != (s[INO], s[DEV])
            yield self._item("modified", p, s, now, None, [["set", ["snapshot", p], s]],
                             replaced=replaced)
        for p in gone:
            if p not in moved_src:
                yield self._item("deleted", p, snap[p], now, None, [["del", ["snapshot", p]]])

    def _item(self, event: str, path: str, s: list, now: int, moved_from: Optional[str],
              advance: list, replaced: bool = False) -> Item:
        size, mtime_ns = s[SIZE], s[MTIME]
        entity = _name_fields("path", path)
        entity.update(size=size, mtime_ns=mtime_ns)
        if moved_from:
            entity.update(_name_fields("moved_from", moved_from))
        if replaced:
            entity["replaced"] = True   # another file (inode) now has this name
        if self.hash and event != "deleted" and size <= self.hash_max_bytes:
            digest = self._digest(path)
            if digest:
                entity[self.hash] = digest
        when = now if event == "deleted" else mtime_ns
        meta = {"entity": "file", "event": event, "mode": self.mode}
        # one id per (event, path, version): an unchanged file is never emitted twice
        return Item(source_id=f"{event}:{path}:{size}:{mtime_ns}", activity=f"file:{event}",
                    start_ns=when, end_ns=when, generated=entity, custom_metadata=meta,
                    advance=advance)

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
        snap = self.position["snapshot"]
        if self.mode == "polling" or self._rescan:
            with self._dirty_lock:   # a full scan covers every notification so far
                self._taken = next(self._events)
            seen = self._scan()
            yield from self._diff(seen, [p for p in snap if p not in seen], None, self._initial)
            return
        with self._dirty_lock:
            dirty = dict(self._dirty)
            moves = {d: src for d, (src, _n) in self._moves.items()}
            self._taken = next(self._events)
        if not dirty:
            return
        seen: Dict[str, list] = {}
        checked: set = set()
        for p in dirty:
            if os.path.isdir(p):
                prefix = p.rstrip(os.sep) + os.sep
                seen.update(self._scan([p]))
                checked.update(q for q in snap if q.startswith(prefix))
            elif not self._ignored(p):
                checked.add(p)
                s = _stat(p)
                if s is not None:
                    seen[p] = s
            if not os.path.exists(p):   # a directory that vanished or moved: what was below it
                prefix = p.rstrip(os.sep) + os.sep
                for q in snap:
                    if q.startswith(prefix):
                        checked.add(q)
                        s = _stat(q)
                        if s is not None:
                            seen[q] = s
        # a moved directory: the kernel's one event names the directories, not the files
        for dest, src in list(moves.items()):
            dprefix, sprefix = dest.rstrip(os.sep) + os.sep, src.rstrip(os.sep) + os.sep
            for p in seen:
                if p.startswith(dprefix) and p not in moves:
                    moves[p] = sprefix + p[len(dprefix):]
        yield from self._diff(seen, [q for q in checked if q not in seen], moves)

    def pass_done(self) -> None:
        """Forgets the notifications this pass consumed (later ones stay)."""
        taken = self._taken
        with self._dirty_lock:
            for p in [p for p, n in self._dirty.items() if n < taken]:
                del self._dirty[p]
            for p in [p for p, (_s, n) in self._moves.items() if n < taken]:
                del self._moves[p]
        self._rescan = self._initial = False


def _name_fields(key: str, path: str) -> dict:
    """``key``: the name as text (undecodable bytes as \\xNN); for a name
    that is not UTF-8 also ``key_bytes_b64``, the exact bytes."""
    text = text_of(path)
    out = {key: text}
    if text != path:
        out[f"{key}_bytes_b64"] = base64.b64encode(os.fsencode(path)).decode()
    return out


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
