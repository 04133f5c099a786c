"""A real Mochi stack for tests: the source-built Mofka 0.8.2 / diaspora-stream-api 0.5.2
(scripts/mochi.sh, once per machine) and a throw-away Mofka server (bedrock).

Usage::

    prefix, reason = mochi_prefix()          # builds on first use (~11 min on 2 cores)
    env = mochi_env(prefix)                  # os.environ + PREFIX/env.sh (PYTHONPATH,
                                             # LD_LIBRARY_PATH, PATH): for subprocesses
    with MofkaServer(tmp_path, prefix, env) as srv:
        srv.group_file                       # <tmp>/mofka.json, written by the server
        srv.stop()                           # SIGTERM by PID (outage)

The libraries are found through LD_LIBRARY_PATH, which the dynamic loader reads
only when a process starts: code that imports the Mofka client must run in a
subprocess started with ``mochi_env``.  ``run_py`` does that with a timeout.
Every wait is bounded; servers are stopped by PID at close, context exit and
interpreter exit.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
MOCHI_SH = ROOT / "scripts" / "mochi.sh"
BUILD_TIMEOUT_S = 1800
_LIVE: "weakref.WeakSet[MofkaServer]" = weakref.WeakSet()
_PREFIX_CACHE: dict = {}


def default_prefix() -> str:
    return os.environ.get("FLOWCEPT_MOCHI_PREFIX") or os.path.join(
        os.path.expanduser("~"), ".cache", "flowcept", "mochi-0.8.2")


def mochi_prefix(build: bool = True) -> Tuple[Optional[str], str]:
    """(prefix, "") of a finished Mochi build, building it with scripts/mochi.sh when
    ``build``; (None, reason) where it is impossible."""
    if "result" in _PREFIX_CACHE:
        return _PREFIX_CACHE["result"]
    prefix = default_prefix()
    if os.path.isfile(os.path.join(prefix, ".complete")) and os.path.isfile(
            os.path.join(prefix, "env.sh")) and not build:
        return prefix, ""
    if not MOCHI_SH.is_file():
        return None, f"{MOCHI_SH} missing"
    try:
        proc = subprocess.run(["bash", str(MOCHI_SH), sys.executable], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S,
                              env=dict(os.environ, FLOWCEPT_MOCHI_PREFIX=prefix))
    except subprocess.TimeoutExpired:
        result = (None, f"scripts/mochi.sh did not finish within {BUILD_TIMEOUT_S} s")
    else:
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines and os.path.isfile(os.path.join(lines[-1], "env.sh")):
            result = (lines[-1], "")
        else:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            result = (None, f"the Mochi stack cannot be built here (scripts/mochi.sh rc="
                            f"{proc.returncode}): {tail}")
    _PREFIX_CACHE["result"] = result
    return result


def mochi_env(prefix: str, base: Optional[dict] = None) -> dict:
    """``base`` (default os.environ) with PREFIX/env.sh applied, for subprocesses."""
    base = dict(os.environ if base is None else base)
    out = subprocess.run(["bash", "-c", f'. "{prefix}/env.sh" && env -0'], env=base,
                         capture_output=True, timeout=30, check=True).stdout
    env = {}
    for item in out.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v.decode()
    # the repository first, so subprocesses import this checkout's flowcept
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def run_py(code: str, env: dict, timeout: float = 120, cwd=None, args=()):
    """Runs ``python -c code`` with ``env``; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


class MofkaServer:
    """``bedrock na+sm -c PREFIX/mofka-server.json`` in its own directory."""

    def __init__(self, workdir, prefix: str, env: dict, start: bool = True,
                 config: Optional[str] = None, protocol: str = "na+sm"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.prefix = prefix
        self.env = dict(env)
        self.config = config or os.path.join(prefix, "mofka-server.json")
        self.protocol = protocol
        self.group_file = str(self.workdir / "mofka.json")
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        _LIVE.add(self)
        if start:
            self.start()

    @property
    def log_path(self) -> Path:
        return self.workdir / "bedrock.log"

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        try:
            os.unlink(self.group_file)
        except FileNotFoundError:
            pass
        bedrock = os.path.join(self.prefix, "bin", "bedrock")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([bedrock, self.protocol, "-c", self.config],
                                     cwd=self.workdir, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bedrock exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if self._group_ready():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"bedrock wrote no group file within {timeout:g} s: {self.log_tail()}")

    def _group_ready(self) -> bool:
        try:
            with open(self.group_file) as f:
                doc = json.load(f)
            return bool(doc.get("members"))
        except (OSError, ValueError):
            return False

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_wait(self, sig, timeout: float) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return True
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not go."""
        if not self._signal_wait(signal.SIGTERM, timeout):
            self._signal_wait(signal.SIGKILL, timeout)
        self._close_log()

    def kill(self) -> None:
        self._signal_wait(signal.SIGKILL, 10.0)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _stop_all():
    for srv in list(_LIVE):
        try:
            srv.kill()
        except Exception:
            pass
