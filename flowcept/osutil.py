"""Small file-system and process helpers every layer uses (one of each).

``private_dir`` makes owner-only directories, ``atomic_write`` replaces a
file's contents in one rename (never a half-written file), ``process_alive``
tells whether a pid exists, ``redact_url`` takes the password out of a URL
before it is shown.
"""
from __future__ import annotations

import os
import stat
import threading


def process_alive(pid: int) -> bool:
    """Whether a process exists (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def private_dir(path: str) -> str:
    """mkdir -p with 0700 on every dir it creates; refuses a foreign or linked leaf."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory owned by uid {os.geteuid()}: "
                              "remove it or choose another FLOWCEPT_SHM_DIR/FLOWCEPT_RUN_DIR")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def atomic_write(path: str, data, *, fsync: bool = False) -> None:
    """Writes ``data`` (bytes or str) to ``path`` owner-only, through a
    temporary file in the same directory renamed over it; never follows a
    symlink at the temporary name.  ``fsync``: the file and its directory
    are synced before returning (durable across an OS crash)."""
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).cast("B")
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"   # threads of one process too
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def redact_url(url: str) -> str:
    """The URL without its password (the user name kept): what messages show."""
    import urllib.parse
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if password is None:
        return url
    if port:
        host = f"{host}:{port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
