"""A real, throw-away MongoDB-wire-protocol server for tests: ``nx-27017``
(no real mongod is installable here), memory storage, 127.0.0.1 on a free
port, stopped by PID (context exit, ``close()``, an atexit hook)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Optional

try:   # imported as support.<name> or, with tests/support on the path, as <name>
    from .server_process import ServerProcess, wait_listening
except ImportError:
    from server_process import ServerProcess, wait_listening


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


class MongoServer(ServerProcess):
    def __init__(self, workdir, port: Optional[int] = None, start: bool = True):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.binary = nx_binary()
        if self.binary is None:
            raise RuntimeError(mongo_available()[1])
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        super().__init__()
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
        return wait_listening(self, "nx-27017", timeout)
