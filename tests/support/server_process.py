"""What every test server shares: a child process started in its own session,
with a log file; graceful stop by PID (SIGTERM, then SIGKILL), kill, a
context manager, and an atexit sweep of servers still running."""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import weakref

_LIVE: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(server, name: str, timeout: float, probe=None):
    """Waits until ``server.port`` accepts a connection (and ``probe(sock)``
    says yes, if given); raises with the log's name when the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.proc.returncode}; see {server._log.name}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as s:
                if probe is None or probe(s):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"{name} on port {server.port} did not answer in {timeout}s")
        time.sleep(0.02)


class ServerProcess:
    proc = None
    _log = None

    def __init__(self):
        _LIVE.add(self)

    def _setup(self, workdir, port, binary, why_missing: str, start: bool) -> None:
        """The common start of a server's __init__: its work directory, a
        port (free if none), its binary (RuntimeError with why_missing if
        None), registered for the atexit sweep, started if asked."""
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary
        if self.binary is None:
            raise RuntimeError(why_missing)
        self.proc = None
        self._log = None
        ServerProcess.__init__(self)
        if start:
            self.start()

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
        """Graceful stop (SIGTERM, SIGKILL after timeout)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 10.0)

    def close(self) -> None:
        self.stop()

    def __enter__(self):
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
