"""A node leader in a process of its own (leader ``process``, the default).

The drain, the packing and the store writes need an interpreter.  Run as a
thread of the capturing process, they need that process's GIL, which a
tight loop of decorated calls holds: the thread then waits up to a switch
interval per step, the ring fills and records spill.  Here they run in a
helper process started with the session, so the application's interpreter
is never taken; the rings are already in node-local shared memory, where
any process of the user can drain them.

The capturing process holds a ``HelperLeader``, which has the methods of a
``Drainer`` that capture uses; each is one request to the helper over a
pipe (one JSON line each way).  The helper runs the same ``Drainer``.

Lifecycle and failure rules:
  * the helper is started by ``HelperLeader.spawn`` with the configuration
    as a value (it reads no environment); the first request waits until
    its transport is open.  If it cannot start, or dies later, the proxy opens a
    ``Drainer`` in this process and goes on with it: records are released
    from a ring only after they are durable, so nothing is lost and nothing
    is stored twice (batch ids are the same).
  * it stays in its parent's process group, so that a job killed as a
    group is killed whole (the epilog then recovers the rings; a live
    helper holds their consumer locks, so recovery never drains beside
    it).  It ignores Ctrl-C (its parent ends the session).  It ends when
    told (``close``), or when its parent goes away (end of file on its
    pipe, or a new parent pid): then it waits, like a leader at finalize,
    for the rings to be closed or their processes to die, drains
    everything and exits.
  * its CPU time is reported with every reply: ``cpu_s`` spent draining
    since it was ready (the leader's cost per record), ``start_cpu_s`` to
    start.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

log = logging.getLogger("flowcept.node.helper")

# Polling: a helper has its own interpreter (and, on any node with a core to
# spare, its own core), so it can look at the rings often.  A 4 MiB ring
# filled at 4 M records/s lasts ~11 ms, and the first batch of a burst takes
# a few ms to pack and commit: the wait after an empty pass starts at
# FIRST_WAIT_S and doubles up to LONGEST_WAIT_S (an idle helper wakes 500
# times a second, ~4 us of work each).
FIRST_WAIT_S = 0.001
LONGEST_WAIT_S = 0.002
# A ring is drained once an eighth of it is full (a thread leader: a
# quarter): the first batch of a burst then starts ~1.5 ms after it, not ~3.
DUE_SHARE = 8
READY_TIMEOUT_S = 60.0


class HelperGone(RuntimeError):
    """The helper process ended or stopped answering."""


class HelperLeader:
    """A Drainer in a helper process (see the module docstring)."""

    transport = None   # no store in this process: readers open it from disk
    spool = None

    def __init__(self, config, job, proc: subprocess.Popen):
        self.config = config
        self.job = job
        self.proc = proc
        self.paths: List[str] = []
        self.records = 0
        self.batches = 0
        self.cpu_s = 0.0            # the helper's CPU time spent draining (since it was ready)
        self.start_cpu_s = 0.0      # ... and to start
        self._fallback = None       # the in-process Drainer after the helper failed
        self._started = False
        self._ready = False
        self._lock = threading.Lock()
        self._buf = b""

    # -- start ------------------------------------------------------------
    @classmethod
    def spawn(cls, config, job) -> "HelperLeader":
        hello = {"config": _pack(config.as_dict()), "job": _pack(job), "parent": os.getpid()}
        proc = None
        if not sys.executable:
            log.warning("flowcept: no interpreter path (sys.executable) to start the leader "
                        "process with; draining in this process instead")
        else:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, _package_root()], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, close_fds=True, bufsize=0)
                proc.stdin.write(json.dumps(hello).encode() + b"\n")
            except OSError as e:
                log.warning("flowcept: cannot start the leader process (%s); draining in this "
                            "process instead (set leader=thread to choose that)", e)
                proc = None
        leader = cls(config, job, proc)
        if proc is None:
            leader._fail_over(None)
        return leader

    # -- the Drainer's methods -----------------------------------------------
    def adopt(self, path: str) -> None:
        if path not in self.paths:
            self.paths.append(path)
            self._call("adopt", path=path)

    def start(self) -> None:
        self._started = True
        self._call("start")

    def drain_once(self, max_batches: int = 64, lazy: bool = False) -> int:
        return self._call("drain_once", max_batches=max_batches, lazy=lazy)

    def drain_spills(self) -> int:
        return self._call("drain_spills")

    def drain_all(self, progress=False, label: str = "draining") -> int:
        return self._call("drain_all")

    def stop(self) -> int:
        return self._call("stop")

    def wait_rings(self, timeout_s: float) -> List[str]:
        return self._call("wait_rings", timeout_s=timeout_s)

    def finish(self, timeout_s: float) -> List[str]:
        leftover = self._call("finish", timeout_s=timeout_s)
        self._end()
        return leftover

    def close(self, unlink: bool = False) -> None:
        self._call("close", unlink=unlink)
        self._end()

    # -- requests -------------------------------------------------------------
    def _call(self, op: str, **args: Any):
        if self._fallback is None:
            try:
                with self._lock:
                    if not self._ready:   # the first request waits for the helper's start
                        reply = self._reply(READY_TIMEOUT_S)
                        if not reply.get("ok"):
                            raise HelperGone(reply.get("error", "refused to start"))
                        self._note(reply)
                        self._ready = True
                    self.proc.stdin.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
                    reply = self._reply(None)
                if reply.get("ok"):
                    self._note(reply)
                    return reply.get("value")
                if reply.get("fatal"):
                    raise HelperGone(reply.get("error", "failed"))
                # the operation failed in the helper as it would here: the caller decides
                raise RuntimeError(f"flowcept leader process: {reply.get('error')}")
            except (HelperGone, OSError, ValueError) as e:
                self._fail_over(e)
        return getattr(self._fallback, op)(**args)

    def _reply(self, timeout: Optional[float]) -> Dict[str, Any]:
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise HelperGone(f"no answer within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise HelperGone(f"it exited (status {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _note(self, reply: Dict[str, Any]) -> None:
        for k in ("records", "batches", "cpu_s", "start_cpu_s"):
            if k in reply:
                setattr(self, k, reply[k])

    def _fail_over(self, why: Optional[BaseException]) -> None:
        """Goes on with a Drainer in this process (same rings, same batch ids)."""
        from flowcept.node.leader import open_leader
        if why is not None:
            log.warning("flowcept: the leader process failed (%s); draining in this process "
                        "from now on", why)
            self._end(kill=True)
        fallback = open_leader(self.config, self.job)
        for path in self.paths:
            fallback.adopt(path)
        if self._started:
            fallback.start()
        self._fallback = fallback
        self.transport, self.spool = fallback.transport, fallback.spool

    def _end(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if kill and proc.poll() is None:
            # it stopped answering: it must not write the store beside our own drainer
            proc.kill()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("flowcept: the leader process %d did not exit", proc.pid)

    @property
    def rings(self) -> Dict[str, Any]:
        return self._fallback.rings if self._fallback is not None else dict.fromkeys(self.paths)


def open_process_leader(config, job) -> HelperLeader:
    """The registry's ``process`` leader."""
    return HelperLeader.spawn(config, job)


# The helper imports the very flowcept its parent runs: the directory above
# this package replaces the current directory at the head of sys.path (a
# ``flowcept/`` folder where the job runs must not shadow it).
_BOOT = ("import sys; sys.path[0] = sys.argv[1]; "
         "from flowcept.node.helper import serve; sys.exit(serve())")


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pack(obj) -> str:
    return base64.b64encode(pickle.dumps(obj)).decode()


def _unpack(text: str):
    return pickle.loads(base64.b64decode(text))


# -- the helper process ---------------------------------------------------------
def serve() -> int:
    """The helper process's main loop (see the module docstring)."""
    import resource
    import signal
    from flowcept.config import build_config
    from flowcept.node.leader import open_leader
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when we stop
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr        # nothing but replies goes to the pipe

    def send(reply: dict) -> None:
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()

    try:
        hello = json.loads(stdin.readline())
        config = build_config(_unpack(hello["config"]), source="the capturing process")
        job = _unpack(hello["job"])
        parent = int(hello["parent"])
        logging.basicConfig(format="%(message)s",
                            level=getattr(logging, config.log_level.upper(), logging.WARNING))
        drainer = open_leader(config, job)
        drainer.due_share = DUE_SHARE
    except Exception as e:   # the capturing process fails over and reports it
        send({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    started = cpu()   # the start (interpreter, imports, store) is not the drain's cost
    send({"ok": True, "start_cpu_s": started})

    def adopt(path: str) -> None:
        drainer.adopt(path)

    ops = {
        "adopt": adopt,
        "start": lambda: drainer.start(first_wait_s=FIRST_WAIT_S,
                                       longest_wait_s=min(LONGEST_WAIT_S,
                                                          config.drain_interval_ms / 1000)),
        "drain_once": drainer.drain_once,
        "drain_spills": drainer.drain_spills,
        "drain_all": drainer.drain_all,
        "stop": drainer.stop,
        "wait_rings": drainer.wait_rings,
        "finish": drainer.finish,
        "close": drainer.close,
    }
    ending = threading.Lock()

    def orphaned() -> None:
        """The parent went away without closing: end like a leader at
        finalize, then exit (whichever of the two watchers sees it first)."""
        if not ending.acquire(blocking=False):
            return
        try:
            drainer.finish(config.finalize_timeout_s)
        except Exception:
            log.exception("flowcept leader process: the last drain failed; the rings stay for "
                          "`flowcept recover`")
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=_watch_parent, args=(parent, orphaned), daemon=True).start()
    for line in iter(stdin.readline, b""):
        req = json.loads(line)
        op = req.get("op")
        if op in ("close", "finish"):
            ending.acquire()   # the end is ours: the parent watcher stands down
        try:
            value = ops[op](**req.get("args", {}))
        except Exception as e:
            log.exception("flowcept leader process: %s failed", op)
            send({"ok": False, "error": f"{type(e).__name__}: {e}"})
            continue
        send({"ok": True, "value": value, "records": drainer.records,
              "batches": drainer.batches, "cpu_s": cpu() - started})
        if op in ("close", "finish"):
            return 0
    orphaned()
    return 0


def _watch_parent(parent: int, orphaned) -> None:
    """A parent killed while a forked child of it still holds our pipe gives
    no end of file: its pid changing tells."""
    while os.getppid() == parent:
        time.sleep(0.5)
    orphaned()


if __name__ == "__main__":
    sys.exit(serve())
