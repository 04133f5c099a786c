"""File-system primitives for code that runs as root on user files (the SLURM epilog).

The epilog runs as root on the compute node after a job and must read what the job's ranks
left in ``/dev/shm`` (or a configured directory) without being tricked into reading or writing
somebody else's file.  The rules implemented here:

* Never follow a symbolic link: every component is opened with ``O_NOFOLLOW``, each directory
  relative to the file descriptor of its parent (``dir_fd=``), so a path cannot be swapped
  between the check and the use (no TOCTOU window between ``stat`` and ``open``).
* Check the *opened* object (``fstat`` of the descriptor), never the name.
* A file is read only if it is a regular file owned by the job's user (``st_uid == uid``).
* A directory on the way is acceptable if (see :func:`dir_is_acceptable`):

  - it is owned by ``uid``, or
  - it is owned by root **and** either has the sticky bit set (``/tmp``, ``/dev/shm``: others
    may create entries but cannot rename or delete ours) or is writable by neither group nor
    others (``/``, ``/dev``, ``/home``: only root can change its entries).

  Anything else (owned by another user, or root-owned but group/other-writable without the
  sticky bit) is refused: whoever can write it could replace the next component.
* Better still, do the reading after :func:`drop_privileges` to the job's user, so the kernel's
  own permission checks apply; the ownership checks then guard against the user's files being
  hard links or symlinks planted by a third party.

Everything raises :class:`UnsafePathError` (a subclass of ``OSError``) with the path and a reason
when a rule is broken.  Standard library only; nothing happens at import time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import List, Optional, Sequence, Union

__all__ = [
    "UnsafePathError",
    "check_dir_chain",
    "dir_is_acceptable",
    "drop_privileges",
    "make_private_dir",
    "open_owned",
    "safe_listdir",
]

PathLike = Union[str, "os.PathLike[str]"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_NOFOLLOW = os.O_NOFOLLOW
_O_DIRECTORY = os.O_DIRECTORY


class UnsafePathError(OSError):
    """A path broke one of the rules above; ``.path`` and ``.reason`` say which and why."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = os.fspath(path) if not isinstance(path, int) else path
        self.reason = reason
        super().__init__(errno.EPERM, f"unsafe path {self.path!r}: {reason}")

    def __str__(self) -> str:
        return f"unsafe path {self.path!r}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- privileges


def drop_privileges(uid: int, gid: Optional[int] = None) -> None:
    """Irrevocably become ``uid`` (real, effective and saved ids) with group ``gid``.

    ``gid`` defaults to the user's primary group from the password database (``KeyError`` if
    ``uid`` has no entry there: pass ``gid`` explicitly for such users).  Supplementary groups
    become the user's groups from the group database (just ``[gid]`` if the user is unknown).
    Order matters: supplementary groups and gid are changed while still root, uid last.

    Dropping to uid 0 is allowed and changes only the groups: it drops no privilege at all, so
    a caller that must not act as root has to check ``uid != 0`` itself (an epilog should refuse
    to act for a root job on user paths).  When not running as root, the call succeeds only if
    the process already is ``uid``/``gid`` (nothing to drop); otherwise ``PermissionError``.
    After the change the ids are verified, and for a non-root target that root cannot be
    regained; failure raises ``OSError`` (the caller, typically a forked child, should exit).
    """
    import pwd  # local: no work at import time

    uid = int(uid)
    user_name: Optional[str] = None
    try:
        entry = pwd.getpwuid(uid)
        user_name = entry.pw_name
    except KeyError:
        entry = None
    if gid is None:
        if entry is None:
            raise KeyError(f"uid {uid} has no passwd entry; pass gid explicitly")
        gid = entry.pw_gid
    gid = int(gid)

    if os.geteuid() != 0:
        if os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid):
            return
        raise PermissionError(errno.EPERM, f"not root: cannot change to uid {uid} gid {gid}")

    groups: List[int] = [gid]
    if user_name is not None:
        try:
            groups = sorted(set(os.getgrouplist(user_name, gid)))
        except OSError:
            groups = [gid]
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)

    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError(errno.EPERM, f"privilege drop to {uid}:{gid} did not take effect")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise OSError(errno.EPERM, "root could be regained after dropping privileges")


# --------------------------------------------------------------------------- files


def _fmt_mode(st: os.stat_result) -> str:
    return f"{stat.filemode(st.st_mode)} uid={st.st_uid} gid={st.st_gid}"


def open_owned(
    path: PathLike,
    uid: int,
    flags: int = os.O_RDONLY,
    *,
    dir_fd: Optional[int] = None,
    mode: int = 0o600,
) -> int:
    """Open ``path`` without following a symlink and return the fd if it is safe to use.

    Safe means: the opened object is a regular file and its owner is ``uid``.  Otherwise the fd
    is closed and :class:`UnsafePathError` raised.  ``O_NOFOLLOW``, ``O_NOCTTY`` and
    ``O_CLOEXEC`` are always added; the open is done with ``O_NONBLOCK`` so that a FIFO planted
    under the name cannot block the caller (the flag is cleared again on the returned fd unless
    the caller asked for it).  Only the last component is protected against symlinks: use
    ``dir_fd`` from :func:`check_dir_chain` with a bare file name to protect the whole path.
    With ``O_CREAT`` the file is created by the calling identity; as root it then belongs to
    root and is refused for another ``uid``: drop privileges first to create user files.
    """
    name = os.fspath(path)
    open_flags = flags | _O_NOFOLLOW | _O_NOCTTY | _O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, open_flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(name, "is a symbolic link (O_NOFOLLOW)") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(name, f"not a regular file ({_fmt_mode(st)})")
        if st.st_uid != uid:
            raise UnsafePathError(name, f"owned by uid {st.st_uid}, expected {uid}")
        if not flags & os.O_NONBLOCK:
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


# --------------------------------------------------------------------------- directories


def dir_is_acceptable(st: os.stat_result, uid: int) -> Optional[str]:
    """Return ``None`` if a directory with status ``st`` may be on a path used for ``uid``,
    else the reason it may not (the rule is in the module docstring)."""
    if not stat.S_ISDIR(st.st_mode):
        return f"not a directory ({_fmt_mode(st)})"
    if st.st_uid == uid:
        return None
    if st.st_uid == 0:
        if st.st_mode & stat.S_ISVTX:
            return None
        if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        return f"root-owned, writable by group/others and not sticky ({_fmt_mode(st)})"
    return f"owned by uid {st.st_uid}, neither {uid} nor root ({_fmt_mode(st)})"


def _components(path: str) -> Sequence[str]:
    if not os.path.isabs(path):
        raise UnsafePathError(path, "must be an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(path, "'..' components are not allowed")
    return parts


def _open_dir_at(name: str, dir_fd: Optional[int], shown: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(shown, "is a symbolic link") from exc
            if exc.errno == errno.ENOTDIR:
                raise UnsafePathError(shown, "is not a directory") from exc
        raise


def check_dir_chain(path: PathLike, uid: int) -> int:
    """Walk the absolute directory ``path`` from ``/`` one component at a time; return an fd.

    Each component is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the fd of its parent
    and its ``fstat`` checked with :func:`dir_is_acceptable`; symlinked components, non-
    directories, ``..`` and directories that another user controls raise
    :class:`UnsafePathError`.  The returned descriptor (``O_CLOEXEC``) refers to the very
    directory that was checked: pass it as ``dir_fd`` to :func:`open_owned` and
    :func:`safe_listdir`, and close it when done.
    """
    shown = os.fspath(path)
    parts = _components(shown)
    fd = _open_dir_at("/", None, "/")
    walked = ""
    try:
        reason = dir_is_acceptable(os.fstat(fd), uid)
        if reason:
            raise UnsafePathError("/", reason)
        for part in parts:
            walked += "/" + part
            nfd = _open_dir_at(part, fd, walked)
            os.close(fd)
            fd = nfd
            reason = dir_is_acceptable(os.fstat(fd), uid)
            if reason:
                raise UnsafePathError(walked, reason)
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_listdir(dir_fd: int) -> List[str]:
    """Sorted entry names of the directory open as ``dir_fd`` (not closed, not moved).

    Names only: open each with :func:`open_owned` (``dir_fd=dir_fd``), which does the checks;
    the listing itself follows nothing.
    """
    st = os.fstat(dir_fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(dir_fd, "descriptor is not a directory")
    # os.listdir(fd) works on a duplicate of the descriptor and rewinds it afterwards.
    return sorted(os.listdir(dir_fd))


def make_private_dir(path: PathLike) -> str:
    """Create directory ``path`` with mode 0700 for the calling (effective) user; return it.

    If it already exists it must be a real directory (not a symlink) owned by the caller; a
    wider mode is narrowed to 0700.  Owner and mode are verified on the opened directory after
    the fact; any violation raises :class:`UnsafePathError`.  Parents are neither created nor
    checked: check them with :func:`check_dir_chain` where that matters.
    """
    name = os.fspath(path)
    euid = os.geteuid()
    try:
        os.mkdir(name, 0o700)
    except FileExistsError:
        st = os.lstat(name)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(name, "exists as a symbolic link")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(name, f"exists and is not a directory ({_fmt_mode(st)})")
    try:
        fd = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(name, "replaced by a symbolic link or non-directory") from exc
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != euid:
            raise UnsafePathError(name, f"owned by uid {st.st_uid}, not by us ({euid})")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
            st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o700 or st.st_uid != euid:
            raise UnsafePathError(name, f"could not be made private ({_fmt_mode(st)})")
    finally:
        os.close(fd)
    return name
