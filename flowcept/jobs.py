"""Job identity and the per-job, per-user paths on a node.

A job has a name (SLURM_JOB_ID, or one made up for runs outside SLURM) and
a 64-bit id used in batch ids.  Shared-memory rings live in
``<shm_dir>/flowcept-<uid>/<job_name>/`` (0700): per user and per job, so
concurrent jobs never see each other's rings and the epilog finds exactly
the job's files.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Optional

from flowcept.transport import JobInfo


def job_id_of(job_name: str) -> int:
    """The 64-bit id of a job name (the number itself for numeric SLURM ids)."""
    if job_name.isdigit() and int(job_name) < 1 << 63:
        return int(job_name)
    return int.from_bytes(hashlib.blake2b(job_name.encode(), digest_size=8).digest(), "little") | 1 << 63


def new_job_name() -> str:
    return time.strftime("local-%Y%m%d-%H%M%S-") + f"{os.getpid()}-{os.urandom(2).hex()}"


def detect_job_name(config) -> Optional[str]:
    """The job name from configuration or the batch system, None if none."""
    if config.job_id:
        return config.job_id
    for var in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID"):
        value = os.environ.get(var)
        if value:
            return value.split(".")[0]
    return None


def process_alive(pid: int) -> bool:
    """Whether a process exists (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_name() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def job_info(config, job_name: str) -> JobInfo:
    return JobInfo(job_name=job_name, job_id=job_id_of(job_name), node=node_name(),
                   run_dir=os.path.join(os.path.abspath(config.run_dir), job_name))


def private_dir(path: str) -> str:
    """mkdir -p with 0700 on every dir it creates; refuses a foreign or linked leaf."""
    import stat
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory owned by uid {os.geteuid()}: "
                              "remove it or choose another FLOWCEPT_SHM_DIR/FLOWCEPT_RUN_DIR")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def ring_dir(config, job_name: str) -> str:
    return os.path.join(config.shm_dir, f"flowcept-{os.geteuid()}", job_name)
