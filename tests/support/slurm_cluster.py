"""A real, throw-away, single-node SLURM cluster for tests.

Usage::

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(reason)
    with SlurmCluster(tmp_path, epilog="/path/to/epilog.sh") as cluster:
        job_id = cluster.sbatch(script, wait=True, timeout=60)
        assert cluster.job_state(job_id) == "COMPLETED"

The cluster follows the configuration verified in ``/work/shared/notes/environment.md``:
``AuthType=auth/none``, root as SlurmUser, one node ``localhost`` with 2 CPUs, daemons run in
the foreground (``slurmctld -D -c``, ``slurmd -D -N localhost``) as children of the test, in
their own process group, with every state/spool/log file under ``workdir``.  Nothing is exported
into ``os.environ``: pass ``cluster.env`` (a copy of the environment plus ``SLURM_CONF``) to
any subprocess that talks to the cluster.  Every wait is bounded; nothing here can hang a test
run.  On exit both daemons are stopped by PID (SIGTERM, then SIGKILL after 5 s); files under
``workdir`` are left in place for the test to inspect.

Daemons need root (SlurmUser=root, slurmd launches jobs as the submitting user), so
``slurm_available()`` reports "not root" as a reason too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, TypeVar, Union

__all__ = [
    "REQUIRED_BINARIES",
    "SlurmCluster",
    "SlurmError",
    "TERMINAL_STATES",
    "ensure_slurm_installed",
    "free_port",
    "slurm_available",
    "wait_until",
]

REQUIRED_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel")

#: Job states after which a job will not run any more (the epilog may still be running while the
#: job shows COMPLETING, which is therefore *not* terminal).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

# The PATH used to find the SLURM binaries: Debian puts the daemons in /usr/sbin, which is not on
# every user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class SlurmError(RuntimeError):
    """The test cluster could not be started or a SLURM command failed."""


def _search_path(env: Optional[dict] = None) -> str:
    path = (env or os.environ).get("PATH", os.defpath)
    parts = path.split(os.pathsep)
    for extra in _SBIN_DIRS:
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(parts)


def _which(name: str) -> Optional[str]:
    return shutil.which(name, path=_search_path())


def slurm_available() -> Tuple[bool, str]:
    """Return ``(True, "")`` if a test cluster can be started here, else ``(False, reason)``."""
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if missing:
        return False, "SLURM binaries not found on PATH (+sbin): " + ", ".join(missing)
    if os.geteuid() != 0:
        return False, "the single-node test cluster runs slurmctld/slurmd as root (SlurmUser=root); not root"
    return True, ""


def _run_bounded(cmd: Sequence[str], timeout: float, env: Optional[dict] = None) -> Tuple[int, str]:
    """Run ``cmd`` with a hard timeout; return ``(returncode, combined output)``."""
    try:
        proc = subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env=env,
            text=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return 124, out + f"\n[timed out after {timeout:.0f} s]"
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout


def ensure_slurm_installed(timeout: float = 300.0) -> Tuple[bool, str]:
    """Install Debian's ``slurm-wlm`` if it is missing and we are root; bounded by ``timeout``.

    Returns what :func:`slurm_available` returns afterwards.  Never raises.  Runs
    ``apt-get update`` only when the first install attempt fails (e.g. empty package lists).
    Waits for a held dpkg lock (another install in progress) within the same time budget.
    """
    ok, reason = slurm_available()
    if ok:
        return ok, reason
    if os.geteuid() != 0:
        return False, reason + " (and not root, so slurm-wlm cannot be installed)"
    if shutil.which("apt-get") is None:
        return False, reason + " (and apt-get is not available to install slurm-wlm)"
    deadline = time.monotonic() + timeout
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    def install() -> Tuple[int, str]:
        lock_wait = str(int(max(1.0, remaining() - 5)))
        return _run_bounded(
            ["apt-get", "-o", f"DPkg::Lock::Timeout={lock_wait}", "install", "-y", "-q", "slurm-wlm"],
            timeout=remaining(),
            env=env,
        )

    rc, out = install()
    if rc != 0 and time.monotonic() < deadline:
        _run_bounded(["apt-get", "-o", "DPkg::Lock::Timeout=60", "update", "-q"], timeout=remaining(), env=env)
        if time.monotonic() < deadline:
            rc, out = install()
    ok, reason = slurm_available()
    if not ok:
        tail = "\n".join(out.strip().splitlines()[-5:])
        reason = f"{reason} (apt-get install slurm-wlm exited {rc}: {tail})"
    return ok, reason


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned) or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not hold within {timeout:.1f} s")
        time.sleep(interval)


_CONF_TEMPLATE = """\
ClusterName={cluster_name}
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={dir}/state
SlurmdSpoolDir={spool}/slurmd-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
{extra}PrologFlags=Alloc
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class SlurmCluster:
    """A single-node SLURM cluster (slurmctld + slurmd) living under ``workdir``.

    ``epilog`` / ``prolog``: paths of executable scripts, written as ``Epilog=`` / ``Prolog=``.
    ``extra_conf``: further ``Key=Value`` lines for slurm.conf.
    """

    def __init__(
        self,
        workdir: PathLike,
        epilog: Optional[PathLike] = None,
        prolog: Optional[PathLike] = None,
        *,
        cpus: int = 2,
        start_timeout: float = 20.0,
        extra_conf: Iterable[str] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.epilog = Path(epilog).resolve() if epilog is not None else None
        self.prolog = Path(prolog).resolve() if prolog is not None else None
        self.cpus = int(cpus)
        self.start_timeout = float(start_timeout)
        self.extra_conf = list(extra_conf)
        self.conf_path = self.workdir / "slurm.conf"
        self.log_dir = self.workdir / "log"
        self.ctld_port = 0
        self.slurmd_port = 0
        self.env: dict = {}
        self._procs: dict = {}
        self._short_dir: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _short_spool(self) -> str:
        """A short path leading to ``workdir/spool``.

        slurmstepd binds a Unix socket ``<SlurmdSpoolDir>/<node>_<job>.<step>`` and ``sun_path``
        holds at most 107 bytes; under pytest's deep ``tmp_path`` that overflows and every job
        launch fails ("slurmstepd failed to send return code").  So the spool dir is named
        through a symlink in a fresh private (0700) directory under /tmp; the files still live
        in ``workdir/spool``.  The short directory is removed by :meth:`stop`.
        """
        spool = self.workdir / "spool"
        if len(str(spool)) <= 48:
            return str(spool)
        if self._short_dir is None:
            self._short_dir = tempfile.mkdtemp(prefix="fcslurm-", dir="/tmp")
            os.symlink(str(spool), os.path.join(self._short_dir, "s"))
        return os.path.join(self._short_dir, "s")

    def write_conf(self) -> Path:
        for sub in ("state", "spool", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        extra = ""
        for key, path in (("Epilog", self.epilog), ("Prolog", self.prolog)):
            if path is not None:
                if not os.access(path, os.X_OK):
                    raise SlurmError(f"{key} script {path} is not executable")
                extra += f"{key}={path}\n"
        for line in self.extra_conf:
            extra += line.rstrip("\n") + "\n"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        self.conf_path.write_text(
            _CONF_TEMPLATE.format(
                cluster_name="flowcepttest",
                ctld_port=self.ctld_port,
                slurmd_port=self.slurmd_port,
                dir=self.workdir,
                spool=self._short_spool(),
                extra=extra,
                cpus=self.cpus,
            )
        )
        return self.conf_path

    def start(self) -> None:
        ok, reason = slurm_available()
        if not ok:
            raise SlurmError(reason)
        self.write_conf()
        self.env = dict(os.environ)
        self.env["PATH"] = _search_path(self.env)
        self.env["SLURM_CONF"] = str(self.conf_path)
        # A test may itself run inside a SLURM job; do not let that job's variables leak into
        # commands aimed at the test cluster.
        for key in list(self.env):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_")) and key != "SLURM_CONF":
                del self.env[key]
        try:
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf_path)])
            self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf_path)])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        exe = shutil.which(argv[0], path=self.env["PATH"])
        if exe is None:
            raise SlurmError(f"{argv[0]} not found")
        out = open(self.log_dir / f"{name}.stdout", "ab")
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(self.workdir),
                start_new_session=True,  # own session and process group
            )
        finally:
            out.close()
        self._procs[name] = proc

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmError(
                        f"{name} exited with {proc.returncode} during start-up\n{self.log_tail()}"
                    )
            rc, out = _run_bounded(["sinfo", "-h", "-o", "%T"], timeout=5, env=self.env)
            last = out.strip()
            if rc == 0 and any(s.strip().rstrip("*~#$@^-!%").lower() == "idle" for s in last.splitlines()):
                return
            time.sleep(0.2)
        raise SlurmError(
            f"cluster not idle within {self.start_timeout:.0f} s (sinfo said {last!r})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Cancel leftover jobs, then stop both daemons by PID.  Idempotent; never hangs."""
        if not self._procs:
            if self._short_dir is not None:
                shutil.rmtree(self._short_dir, ignore_errors=True)
                self._short_dir = None
            return
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                for job_id in self.job_ids():
                    self.scancel(job_id)
            except Exception:
                pass
        # slurmd first: it is the one with jobs; then the controller.
        for name in ("slurmd", "slurmctld"):
            proc = self._procs.get(name)
            if proc is not None:
                self._terminate(proc)
        self._procs.clear()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    @staticmethod
    def _terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
        # The daemon led its own process group (start_new_session): whatever it left in that
        # group is ours to end too.  Children that left the group (slurmstepd daemonizes) are
        # ended with their job by scancel in stop().
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def pids(self) -> dict:
        return {name: p.pid for name, p in self._procs.items()}

    def log_tail(self, lines: int = 20) -> str:
        chunks = []
        if self.log_dir.is_dir():
            for path in sorted(self.log_dir.iterdir()):
                try:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                except OSError:
                    continue
                chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)

    # ------------------------------------------------------------------ commands

    def run(self, *argv: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run a SLURM client command against this cluster; return its output."""
        rc, out = _run_bounded(list(argv), timeout=timeout, env=self.env)
        if check and rc != 0:
            raise SlurmError(f"{' '.join(argv)} exited {rc}: {out.strip()}")
        return out

    def sbatch(
        self,
        script_path: PathLike,
        *args: str,
        wait: bool = True,
        timeout: float = 60.0,
        cwd: Optional[PathLike] = None,
    ) -> str:
        """Submit ``script_path`` (extra ``args`` go before it, e.g. ``"-n", "2"``); return the id.

        The job's working directory (and default ``slurm-%j.out``) is ``cwd`` or ``workdir``.
        With ``wait`` the call returns once the job is in a terminal state and no longer
        COMPLETING (i.e. the epilog has finished), or raises ``TimeoutError`` after ``timeout``.
        """
        argv = ["sbatch", "--parsable", f"--chdir={cwd or self.workdir}", *args, str(script_path)]
        out = self.run(*argv, timeout=min(timeout, 30.0))
        job_id = out.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise SlurmError(f"unexpected sbatch output: {out!r}")
        if wait:
            self.wait_job(job_id, timeout=timeout)
        return job_id

    def job_info(self, job_id: str) -> dict:
        """``scontrol show job -o`` as a dict (empty when the job is unknown / purged)."""
        rc, out = _run_bounded(["scontrol", "show", "job", "-o", str(job_id)], timeout=10, env=self.env)
        if rc != 0:
            return {}
        info: dict = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep and key not in info:
                info[key] = value
        return info

    def job_state(self, job_id: str) -> Optional[str]:
        """The job's state (``PENDING``, ``RUNNING``, ``COMPLETING``, ``COMPLETED``...) or None."""
        state = self.job_info(job_id).get("JobState")
        if state is None:
            return None
        return state.split()[0]

    def job_done(self, job_id: str) -> bool:
        """True once the job has ended and its epilog is finished (or it has been purged)."""
        rc, out = _run_bounded(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"], timeout=10, env=self.env
        )
        if rc == 0 and out.strip().upper() in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}:
            return False
        info = self.job_info(job_id)
        if not info:
            # purged from slurmctld (or squeue did not know it): it is gone
            return rc == 0 and not out.strip() or "Invalid job id" in out
        state = info.get("JobState", "")
        return state in TERMINAL_STATES and "COMPLETING" not in info.get("Reason", "")

    def wait_job(self, job_id: str, timeout: float = 60.0) -> str:
        """Wait until :meth:`job_done`; return the final state (or ``"GONE"``)."""
        wait_until(lambda: self.job_done(job_id), timeout=timeout, interval=0.25, what=f"job {job_id} finished")
        return self.job_state(job_id) or "GONE"

    def wait_epilog_done(
        self, job_id: str, predicate: Callable[[], T], timeout: float = 30.0
    ) -> T:
        """Wait for the job to end, then until ``predicate()`` is truthy (e.g. a marker file
        written by the epilog shows the job id).  Bounded by ``timeout`` overall."""
        start = time.monotonic()
        self.wait_job(job_id, timeout=timeout)
        left = max(0.5, timeout - (time.monotonic() - start))
        return wait_until(predicate, timeout=left, what=f"epilog of job {job_id}")

    def scancel(self, job_id: str, timeout: float = 10.0) -> None:
        self.run("scancel", str(job_id), timeout=timeout, check=False)

    def job_ids(self) -> list:
        out = self.run("squeue", "-h", "-o", "%i", timeout=10, check=False)
        return [line.strip() for line in out.splitlines() if line.strip().isdigit()]
