"""A real, throw-away RabbitMQ broker for tests (Debian's rabbitmq-server).

    with RabbitServer(tmp_path) as srv:
        srv.url      # amqp://guest:guest@127.0.0.1:PORT/%2F

Runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (not /usr/sbin, which su's)
in the foreground as a child of the test, everything (mnesia, logs, config,
epmd) under the test's directory and on free 127.0.0.1 ports.  When root
and the package is missing, ``ensure_installed`` installs it with apt-get
(bounded).  ``stop()`` ends the broker and the epmd it started, by PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Optional, Tuple

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed(timeout: float = 300) -> Tuple[bool, str]:
    """(ok, reason): the broker binary exists, installing it when root."""
    if os.access(SERVER, os.X_OK):
        return True, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False, ("rabbitmq-server is not installed: "
                       "apt-get install -y --no-install-recommends rabbitmq-server")
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "rabbitmq-server"],
                       capture_output=True, timeout=timeout, check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError) as e:
        return False, f"could not install rabbitmq-server with apt-get: {type(e).__name__}"
    return (True, "") if os.access(SERVER, os.X_OK) else (False, "apt-get did not provide " + SERVER)


class RabbitServer:
    def __init__(self, base, start_timeout: float = 90):
        self.base = str(base)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.start()

    def _env(self):
        d = self.base
        return {**os.environ, "HOME": f"{d}/home", "RABBITMQ_NODENAME": f"rabbit-t{self.port}@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_BASE": d,
                "RABBITMQ_MNESIA_BASE": f"{d}/mnesia", "RABBITMQ_LOG_BASE": f"{d}/log",
                "RABBITMQ_LOGS": "-", "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
                "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins"}

    def start(self) -> None:
        d = self.base
        for sub in ("home", "mnesia", "log"):
            os.makedirs(f"{d}/{sub}", exist_ok=True)
        with open(f"{d}/rabbitmq.conf", "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        with open(f"{d}/enabled_plugins", "w") as f:
            f.write("[].\n")
        self._log = open(f"{d}/server.log", "ab")
        self.proc = subprocess.Popen([SERVER], env=self._env(), stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"AMQP\x00\x00\x09\x01")
                    s.settimeout(2)
                    if s.recv(1):
                        return
            except OSError:
                time.sleep(0.3)
        tail = open(f"{d}/server.log", "rb").read()[-2000:].decode("utf-8", "replace")
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._kill_epmd()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def _kill_epmd(self) -> None:
        # the broker daemonizes an epmd on our port: find it by its port argument, end it by PID
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    envb = f.read()
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"epmd") and f"ERL_EPMD_PORT={self.epmd_port}".encode() in envb:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
