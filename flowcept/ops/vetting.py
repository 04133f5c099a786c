"""Path vetting before anything of a job is opened: the ring directory's chain from ``/``
(no symlinked component, no directory another user controls, the per-user and per-job levels
owner-writable only), every entry of it ``lstat``-ed through the directory descriptor (a
symlink, a non-regular file, another uid's file or a hard-linked one is refused and its ring
left alone), the spill path each ring's header names, and the run directory's existing part.

``log`` is any ``log(action, message, failure=False)`` callable (:class:`flowcept.ops.privsep.Log`).
"""
from __future__ import annotations

import os
import re
import stat
from typing import Callable, Dict, List, Optional

_RING_ENTRY = re.compile(r"^(?P<ring>[A-Za-z0-9_.-]+?\.ring)(?P<suffix>|\.spill|\.spill\.cursor|"
                         r"\.spill\.cursor\.tmp)$")


def check_run_dir(path: str, uid: int) -> None:
    """Chain-checks the existing part of ``path`` (what does not exist yet is created 0700)."""
    from flowcept.ops.safefs import check_dir_chain
    existing = path
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if os.path.islink(existing) or not os.path.isdir(existing):
        from flowcept.ops.safefs import UnsafePathError
        raise UnsafePathError(existing, "is a symbolic link or not a directory")
    os.close(check_dir_chain(existing, uid))


def vet_ring_dir(ring_dir: str, uid: int, log: Callable[..., None]) -> Optional[List[str]]:
    """The ring files of the job that are safe to recover (None: the dir is unsafe or absent)."""
    from flowcept.ops.safefs import UnsafePathError, check_dir_chain, safe_listdir
    try:
        fd = check_dir_chain(ring_dir, uid)
    except FileNotFoundError:
        return None
    except UnsafePathError as e:
        log("refused", f"{e}; nothing read or written there", failure=True)
        return None
    except OSError as e:
        log("refused", f"cannot walk {ring_dir}: {e}", failure=True)
        return None
    try:
        # The per-user and per-job levels are made 0700 by flowcept: group/other write access
        # there means somebody else could have swapped entries.  (Both were just chain-checked.)
        for path, st in ((os.path.dirname(ring_dir), os.lstat(os.path.dirname(ring_dir))),
                         (ring_dir, os.fstat(fd))):
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log("refused", f"unsafe path {path!r}: writable by group/others "
                    f"({stat.filemode(st.st_mode)}); nothing read or written there", failure=True)
                return None
        names = safe_listdir(fd)
        families: Dict[str, List[str]] = {}
        bad_rings = set()
        for name in names:
            m = _RING_ENTRY.match(name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            reason = None
            if stat.S_ISLNK(st.st_mode):
                reason = "is a symbolic link"
            elif not stat.S_ISREG(st.st_mode):
                reason = f"is not a regular file ({stat.filemode(st.st_mode)})"
            elif st.st_uid != uid:
                reason = f"owned by uid {st.st_uid}, expected {uid}"
            elif st.st_nlink != 1:
                reason = f"has {st.st_nlink} hard links"
            if m is None:
                log("ignored", f"{os.path.join(ring_dir, name)}: not a flowcept ring file"
                    + (f" ({reason}; not touched)" if reason else " (not touched)"),
                    failure=reason is not None)
                continue
            ring = m.group("ring")
            families.setdefault(ring, []).append(name)
            if reason:
                bad_rings.add(ring)
                log("refused", f"unsafe path {os.path.join(ring_dir, name)!r}: {reason}; "
                    f"ring {ring} left alone, nothing read or written through it", failure=True)
        good = []
        for ring, members in sorted(families.items()):
            if ring in bad_rings:
                continue
            if ring not in members:
                log("ignored", f"{os.path.join(ring_dir, members[0])}: no ring file beside it")
                continue
            good.append(os.path.join(ring_dir, ring))
        return good
    finally:
        os.close(fd)


def vet_spill_paths(rings: List[str], log: Callable[..., None]) -> List[str]:
    """Keeps the rings whose header names their own spill file (``<ring>.spill`` beside it).

    The spill path is stored in the ring file, which its producer wrote: a ring naming another
    file would make the consumer read that file.  Opening the ring here only maps it (the C
    open is O_NOFOLLOW and checks the owner); nothing is consumed.
    """
    from flowcept.native.ring import Ring, RingError
    good = []
    for path in rings:
        try:
            ring = Ring.open(path)
        except RingError as e:
            log("refused", f"{path}: {e.strerror}; left alone", failure=True)
            continue
        try:
            spill = ring.spill_path
        finally:
            ring.close()
        if spill and spill != path + ".spill":
            log("refused", f"{path}: its header names spill file {spill!r}, not "
                f"{path + '.spill'!r}; ring left alone, nothing read through it", failure=True)
            continue
        good.append(path)
    return good

