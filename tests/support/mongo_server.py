"""A real, throw-away MongoDB-wire-protocol server for tests: ``nx-27017``
(no real mongod is installable here), memory storage, 127.0.0.1 on a free
port, stopped by PID (context exit, ``close()``, an atexit hook)."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from typing import Optional

_LIVE: "weakref.WeakSet[MongoServer]" = weakref.WeakSet()


def nx_binary() -> Optional[str]:
    here = os.path.join(os.path.dirname(sys.executable), "nx-27017")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("nx-27017")


def mongo_available():
    if nx_binary() is None:
        return False, "no nx-27017 server (pip install 'nx-27017==0.8.1')"
    try:
        import pymongo  # noqa: F401
    except ImportError:
        return False, "pymongo not installed (pip install 'pymongo>=4.6')"
    return True, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MongoServer:
    def __init__(self, workdir, port: Optional[int] = None, start: bool = True):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.binary = nx_binary()
        if self.binary is None:
            raise RuntimeError(mongo_available()[1])
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        _LIVE.add(self)
        if start:
            self.start()

    def url(self, db: str = "flowcept") -> str:
        return f"mongodb://127.0.0.1:{self.port}/{db}"

    def client(self):
        import pymongo
        return pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}/",
                                   serverSelectionTimeoutMS=5000)

    def start(self, timeout: float = 20.0) -> "MongoServer":
        if self.running:
            return self
        args = [self.binary, "--db", "memory", "--host", "127.0.0.1", "-p", str(self.port),
                "--log-file", os.path.join(self.workdir, "nx.log"),
                "--pid-file", os.path.join(self.workdir, "nx.pid")]
        self._log = open(os.path.join(self.workdir, f"nx-{self.port}.out"), "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.proc.returncode}; see {self._log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nx-27017 on port {self.port} did not listen in {timeout}s")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig, timeout: float) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 10.0) -> None:
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 10.0)

    close = stop

    def __enter__(self) -> "MongoServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for srv in list(_LIVE):
        try:
            srv.kill()
        except Exception:
            pass
