"""Several compute nodes on one machine, for multi-node tests.

``NodeJob(["node1", "node2"], ranks_per_node=2, argv=[python, "app.py"])``
starts one MPI job (MPICH's hydra ``mpiexec``) whose ranks run on emulated
nodes: hydra starts one proxy per "host" through a launcher script (in
place of ssh) that puts the proxy in its own UTS namespace with the node's
host name.  So every rank sees its node's ``socket.gethostname()``, MPI's
``COMM_TYPE_SHARED`` groups the ranks of a node, and each node gets its own
node leader, as on a cluster; the ranks still number 0..N-1 across nodes
and share one job (one workflow, distinct task ids).

Each node also gets its own node-local directory (``node_dir(name)``), and
``FLOWCEPT_SHM_DIR`` points there: nodes never share shared-memory rings.

A UTS namespace needs root (``unshare --uts``) or an unprivileged user
namespace (``unshare --user --map-root-user --uts``); ``nodes_available()``
says which works here and, if neither does, why the tests are skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

# The "ssh" hydra calls: ``launcher [options] HOST COMMAND``.  Runs COMMAND
# (one shell string, as ssh would) in a new UTS namespace named HOST, with
# that node's shared-memory directory.
_LAUNCHER = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;
    *) break ;;
  esac
done
host="$1"; shift
export FLOWCEPT_SHM_DIR="{root}/$host/shm"
mkdir -p "$FLOWCEPT_SHM_DIR"
exec {unshare} sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
"""

_UNSHARE_MODES = (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"])


def _unshare_prefix() -> Optional[List[str]]:
    if shutil.which("unshare") is None:
        return None
    for prefix in _UNSHARE_MODES:
        try:
            r = subprocess.run(prefix + ["sh", "-c", "hostname flowcept-probe && hostname"],
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == "flowcept-probe":
            return prefix
    return None


def mpiexec() -> Optional[str]:
    """The MPICH hydra mpiexec beside this Python (the mpich wheel's), or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec.hydra")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec.hydra")


def nodes_available():
    """(ok, reason)."""
    if mpiexec() is None:
        return False, "no MPICH hydra mpiexec (pip install mpich mpi4py)"
    if _unshare_prefix() is None:
        return False, ("emulating nodes needs a UTS namespace per node: run the tests as root "
                       "(unshare --uts) or enable unprivileged user namespaces "
                       "(sysctl kernel.unprivileged_userns_clone=1)")
    return True, ""


class NodeJob:
    """One MPI job over emulated nodes (see the module docstring)."""

    def __init__(self, workdir, nodes: Sequence[str], ranks_per_node: int, argv: Sequence[str],
                 env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.nodes = list(nodes)
        self.ranks_per_node = ranks_per_node
        prefix = _unshare_prefix()
        if prefix is None or mpiexec() is None:
            raise RuntimeError(nodes_available()[1])
        os.makedirs(self.workdir, exist_ok=True)
        self.launcher = os.path.join(self.workdir, "node-launcher.sh")
        with open(self.launcher, "w") as f:
            f.write(_LAUNCHER.format(root=os.path.join(self.workdir, "nodes"),
                                     unshare=" ".join(prefix)))
        os.chmod(self.launcher, 0o755)
        hosts = ",".join(f"{n}:{ranks_per_node}" for n in self.nodes)
        self.args = [mpiexec(), "-launcher", "ssh", "-launcher-exec", self.launcher,
                     "-hosts", hosts, "-n", str(len(self.nodes) * ranks_per_node), *argv]
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("FLOWCEPT_SHM_DIR", None)      # per node (the launcher sets it)
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen] = None

    def node_dir(self, node: str) -> str:
        return os.path.join(self.workdir, "nodes", node)

    def start(self) -> "NodeJob":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        return self

    def wait(self, timeout: float):
        """(returncode, stdout, stderr); kills the job on timeout."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"node job did not finish in {timeout}s:\n{out}\n{err}")
        return self.proc.returncode, out, err

    def run(self, timeout: float = 300):
        return self.start().wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            import signal
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
