"""Privilege separation for work a root process does on a user's files.

The work runs in a forked child that has dropped privileges to the job's uid/gid
(:func:`flowcept.ops.safefs.drop_privileges`), so the kernel's own permission checks apply; a
job of root is worked on as root, on root's own files only.  The root parent only reads the
child's log lines (JSON strings) from a pipe and hands them to ``write``, and kills the child
at the time limit.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
from typing import Callable

from flowcept.ops.slurmjob import JobContext


class Log:
    """One line per action; ``emit`` is where lines go (the pipe to the parent)."""

    def __init__(self, ctx: JobContext, emit: Callable[[str], None]):
        self.ctx = ctx
        self.emit = emit
        self.failed = False

    def __call__(self, action: str, message: str, *, failure: bool = False) -> None:
        if failure:
            self.failed = True
        self.emit(f"job={self.ctx.job} uid={self.ctx.uid} {action}: {message}")



def open_log(path: str):
    """The log file, appended to, created 0600, never through a symlink, owned by us."""
    from flowcept.ops.safefs import open_owned
    fd = open_owned(path, os.geteuid(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode=0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", buffering=1)


def stamp(line: str) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {socket.gethostname()} flowcept-epilog[{os.getpid()}]: {line}"



def supervise(ctx: JobContext, time_limit: float, work: Callable[["Log"], None],
              write: Callable[[str], None]) -> int:
    """Runs ``work(log)`` in a child as the job's user; returns its exit status (0: done, 1: a
    failure was logged, it raised, was killed or ran past ``time_limit`` seconds)."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:   # the child: become the user, do the work, report through the pipe
        code = 1
        try:
            os.close(rfd)
            pipe = os.fdopen(wfd, "w", buffering=1)

            def emit(line: str) -> None:
                pipe.write(json.dumps(line) + "\n")

            log = Log(ctx, emit)
            try:
                if os.geteuid() == 0 and ctx.uid != 0:
                    from flowcept.ops.safefs import drop_privileges
                    drop_privileges(ctx.uid, ctx.gid)
                    log("privileges", f"dropped to uid {os.getuid()} gid {os.getgid()}")
                elif ctx.uid == 0:
                    log("privileges", "job of root: working as root on root's files only")
                os.umask(0o077)
                work(log)
                code = 1 if log.failed else 0
            except BaseException as e:   # report, never raise out of the child
                import traceback
                tb = traceback.format_exc().strip().splitlines()
                log("error", f"{type(e).__name__}: {e} [{tb[-3] if len(tb) > 2 else ''}]",
                    failure=True)
                code = 1
            pipe.flush()
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + time_limit
    buf = b""
    timed_out = False
    with os.fdopen(rfd, "rb", buffering=0) as r:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = r.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                try:
                    write(str(json.loads(raw.decode())))
                except ValueError:
                    write(f"job={ctx.job} (unparsable line from worker) {raw[:200]!r}")
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        write(f"job={ctx.job} uid={ctx.uid} timeout: work not finished within "
              f"{time_limit:g} s, killed; what was committed stays (re-run is harmless)")
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return 1
    if os.WIFSIGNALED(status):
        write(f"job={ctx.job} uid={ctx.uid} error: worker killed by signal {os.WTERMSIG(status)}")
        return 1
    code = os.WEXITSTATUS(status)
    write(f"job={ctx.job} uid={ctx.uid} done: exit {code}")
    return code

