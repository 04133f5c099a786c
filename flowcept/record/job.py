"""Job identity and the node-local paths derived from it.

A job has a name (the batch system's job id, or one made up for runs
outside a batch system; chosen by configuration, see ``Config.job_id``) and
a 64-bit id used in batch ids.  Shared-memory rings live in
``<shm_dir>/flowcept-<uid>/<job_name>/`` (0700): per user and per job, so
concurrent jobs never see each other's rings and the epilog finds exactly
the job's files.  The C library computes the same id (``fc_job_id_of``).
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class JobInfo:
    """Where a batch comes from: known to every transport."""
    job_name: str       # e.g. SLURM job id "12345" or "local-20261128-034700-1234"
    job_id: int         # 64-bit form used in batch ids
    node: str           # host name of the leader
    run_dir: str        # <run_dir>/<job_name>


def job_id_of(job_name: str) -> int:
    """The 64-bit id of a job name (the number itself for numeric SLURM ids:
    ASCII digits only, as C's fc_job_id_of; other names hash)."""
    if job_name.isascii() and job_name.isdigit() and int(job_name) < 1 << 63:
        return int(job_name)
    return int.from_bytes(hashlib.blake2b(name_bytes(job_name), digest_size=8).digest(),
                          "little") | 1 << 63


def name_bytes(job_name: str) -> bytes:
    """The bytes of a job name as C sees them: as the environment gave them
    (surrogateescape); a name no environment could hold (a lone surrogate)
    still encodes (surrogatepass) rather than raising."""
    try:
        return job_name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return job_name.encode("utf-8", "surrogatepass")


def new_job_name() -> str:
    return time.strftime("local-%Y%m%d-%H%M%S-") + f"{os.getpid()}-{os.urandom(2).hex()}"


def node_name() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def check_job_name(job_name: str) -> str:
    """A job name becomes a directory name (rings, run dir): refuses one that
    is empty, '.' or '..', holds '/' or NUL, or is longer than 255 bytes."""
    from flowcept.errors import ConfigError
    if (not isinstance(job_name, str) or job_name in ("", ".", "..") or "/" in job_name
            or "\0" in job_name or len(name_bytes(job_name)) > 255):
        raise ConfigError(f"job name {job_name!r} cannot name a directory: set job_id "
                          "(FLOWCEPT_JOB_ID) to a name without '/', not '.' or '..', "
                          "at most 255 bytes")
    return job_name


def user_name() -> str:
    """Who runs the job (the uid as text when it has no name)."""
    import getpass
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def job_info(config, job_name: str) -> JobInfo:
    check_job_name(job_name)
    return JobInfo(job_name=job_name, job_id=job_id_of(job_name), node=node_name(),
                   run_dir=os.path.join(os.path.abspath(config.run_dir), job_name))


def ring_dir(config, job_name: str) -> str:
    check_job_name(job_name)
    return os.path.join(config.shm_dir, f"flowcept-{os.geteuid()}", job_name)
